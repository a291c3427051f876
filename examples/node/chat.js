#!/usr/bin/env node
// A streaming chat client for dialogd over gRPC: each line on stdin is a
// turn of one dialogue, and the reply is printed as it streams.
//
//   node chat.js [--addr 127.0.0.1:50051] [--dialogue my-chat] [--key dk_...]
//
// The protos are loaded from the repository's proto/ directory at run time.
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import path from "node:path";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback;
}

const addr = option("addr", "127.0.0.1:50051");
const dialogue = option("dialogue", `node-${Date.now()}`);
const key = option("key", process.env.DIALOGD_API_KEY);

const here = path.dirname(fileURLToPath(import.meta.url));
const definition = protoLoader.loadSync("dialogue/v1/dialogue_service.proto", {
  includeDirs: [path.join(here, "..", "..", "proto")],
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});
const { dialogue: { v1 } } = grpc.loadPackageDefinition(definition);
const client = new v1.DialogueService(addr, grpc.credentials.createInsecure());

function metadata() {
  const m = new grpc.Metadata();
  if (key) m.set("authorization", `Bearer ${key}`);
  return m;
}

// One turn, streamed; resolves once the reply is stored.
function turn(text) {
  return new Promise((resolve, reject) => {
    const call = client.ConverseStream(
      {
        name: `dialogues/${dialogue}`,
        content: [{ text }],
        create_if_missing: true,
      },
      metadata(),
    );
    call.on("data", (message) => {
      if (message.event === "delta") process.stdout.write(message.delta.text);
      if (message.event === "end") {
        const usage = message.end.usage;
        process.stdout.write(`\n[${message.end.finish_reason}, ${usage.prompt_tokens}+${usage.completion_tokens} tokens]\n`);
      }
    });
    call.on("error", reject);
    call.on("end", resolve);
  });
}

const lines = createInterface({ input: process.stdin, terminal: process.stdin.isTTY });
if (process.stdin.isTTY) process.stdout.write(`dialogue ${dialogue} on ${addr}; type a message\n> `);
for await (const line of lines) {
  if (!line.trim()) continue;
  try {
    await turn(line);
  } catch (error) {
    console.error(`error: ${error.code} ${error.details}`);
    process.exitCode = 1;
    break;
  }
  if (process.stdin.isTTY) process.stdout.write("> ");
}
client.close();
