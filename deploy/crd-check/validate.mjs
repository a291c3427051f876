// Validates the custom resources in rendered manifests against their
// operators' schemas (kubernetes-validate knows only built-in kinds).
// Usage: node validate.mjs FILE...; fails if an object is invalid or if
// no custom resource was checked at all.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const models = [ServiceMonitor];
let checked = 0;
let failed = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    const object = doc.toJS();
    const model = models.find((m) => m.is(object));
    if (!model) continue;
    try {
      new model(object).validate();
      checked += 1;
    } catch (error) {
      failed += 1;
      console.error(`${file}: ${object.kind} ${object.metadata?.name}: ${error.message}`);
    }
  }
}
console.log(`custom resources valid: ${checked}, invalid: ${failed}`);
process.exit(failed > 0 || checked === 0 ? 1 : 0);
