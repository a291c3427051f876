//! The Lua scripts that make a dialogue's writes atomic on Redis: each
//! touches the keys of one owner only (one hash tag, so one cluster slot).

/// Creates a dialogue with its head and index entry, unless it exists.
/// KEYS: meta, head, owner index. ARGV: meta JSON, create time, index
/// member, turn count (a branch's borrowed turns, else 0), latest summary
/// index ('').
pub const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'n', ARGV[4], 't', ARGV[2], 's', ARGV[5])
redis.call('ZADD', KEYS[3], 0, ARGV[3])
return 1
";

/// An exchange: appended only on the expected turn count.
/// KEYS: meta, head, turns, owner index, idempotency key, idempotency set.
/// ARGV: meta JSON when creating (else ''), expected count, last turn time,
/// latest summary index (''), idempotency JSON (''), its TTL in ms, request
/// ID, index member, inline image bytes of the turns, then the turns' JSON.
/// The head's `b` counts the dialogue's image bytes.
pub const COMMIT: &str = r"
if ARGV[1] ~= '' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return 'EXISTS' end
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('HSET', KEYS[2], 'n', 0, 't', ARGV[3], 's', '')
  redis.call('ZADD', KEYS[4], 0, ARGV[8])
elseif redis.call('EXISTS', KEYS[1]) == 0 then
  return 'MISSING'
end
local n = tonumber(redis.call('HGET', KEYS[2], 'n') or '0')
if n ~= tonumber(ARGV[2]) then return 'CONFLICT' end
for i = 10, #ARGV do redis.call('RPUSH', KEYS[3], ARGV[i]) end
redis.call('HSET', KEYS[2], 'n', n + #ARGV - 9, 't', ARGV[3])
if ARGV[9] ~= '0' then redis.call('HINCRBY', KEYS[2], 'b', ARGV[9]) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], 's', ARGV[4]) end
if ARGV[5] ~= '' then
  redis.call('SET', KEYS[5], ARGV[5], 'PX', ARGV[6])
  redis.call('SADD', KEYS[6], ARGV[7])
end
return 'OK'
";

/// Erases a dialogue. KEYS: meta, head, turns, idempotency set, owner
/// index. ARGV: index member, idempotency key prefix (the records share
/// the dialogue's hash tag, so its slot).
pub const ERASE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for _, rid in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  redis.call('DEL', ARGV[2] .. rid)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[1])
return 1
";

/// Turns by index. A branch's list starts after the turns it borrows: the
/// head counts them, the list does not, so the offset is their difference.
/// KEYS: head, turns. ARGV: first and last index.
pub const READ: &str = r"
local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
local o = math.max(n - redis.call('LLEN', KEYS[2]), 0)
local from = math.max(tonumber(ARGV[1]) - o, 0)
local to = tonumber(ARGV[2]) - o
if to < from then return {} end
return redis.call('LRANGE', KEYS[2], from, to)
";

/// A branch adopting its borrowed turns: prepended, with its settings
/// (fork cleared), only while it still borrows exactly that many.
/// KEYS: meta, head, turns. ARGV: meta JSON, borrowed count, their image
/// bytes, then the turns' JSON oldest first.
pub const ADOPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 'MISSING' end
local n = tonumber(redis.call('HGET', KEYS[2], 'n') or '0')
if n - redis.call('LLEN', KEYS[3]) ~= tonumber(ARGV[2]) then return 'CONFLICT' end
for i = #ARGV, 4, -1 do redis.call('LPUSH', KEYS[3], ARGV[i]) end
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[3] ~= '0' then redis.call('HINCRBY', KEYS[2], 'b', ARGV[3]) end
return 'OK'
";

/// Own turns rewritten in place (deleted items or responses), at their
/// indexes mapped through the branch offset, all or none, only while the
/// head still counts `n` turns. KEYS: head, turns. ARGV: expected count,
/// then (index, turn JSON) pairs, then the change of image bytes.
pub const REPLACE: &str = r"
local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '-1')
if n ~= tonumber(ARGV[1]) then return 'CONFLICT' end
local o = math.max(n - redis.call('LLEN', KEYS[2]), 0)
for i = 2, #ARGV - 1, 2 do
  local at = tonumber(ARGV[i]) - o
  if at < 0 or at >= n - o then return 'MISSING' end
end
for i = 2, #ARGV - 1, 2 do
  redis.call('LSET', KEYS[2], tonumber(ARGV[i]) - o, ARGV[i + 1])
end
if ARGV[#ARGV] ~= '0' then redis.call('HINCRBY', KEYS[1], 'b', ARGV[#ARGV]) end
return 'OK'
";
