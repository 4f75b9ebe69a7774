-- Write one partition's share of a batch atomically, each customer with compare-and-set.
-- Step 4 of the commit order in stream_app/store/customers.py. Every key is declared and
-- carries the partition's hash tag (schemas/README.md, layout v2), so the call runs on
-- a Redis Cluster.
--
-- KEYS[1]       applied offsets hash   (field "topic/partition" -> last applied offset)
-- KEYS[2]       watermarks hash        (field "topic/partition" -> max event time, ms)
-- KEYS[3]       outbox hash            (field "kind:id" -> message JSON, awaiting Kafka)
-- KEYS[4]       outbox queue           (sorted set: field "kind:id" by commit time, ms)
-- KEYS[5]       alert feed list        (newest first)
-- KEYS[6]       published ids          (sorted set: alert and trigger ids Kafka acknowledged)
-- KEYS[7]       win-back outcomes hash (trigger id -> outcome JSON)
-- KEYS[8..7+n]  customer hashes, one per change
-- KEYS[8+n..]   the rank sets, roll-ups and histograms the changes name (by index)
-- ARGV[1]       now (ms), ARGV[2] feed length, ARGV[3] n, ARGV[4] mode: "c" (each customer's
--               sums, below) or "m" (the sums merged over the call's customers)
-- then          m, then m pairs (field, offset)      -- only ever move forward
-- then          w, then w pairs (field, event ms)    -- only ever move forward
-- then, per customer key in order, plain arguments (no JSON to decode):
--   expected version ("" for a new customer), customer id (the rank sets' member),
--   f, then f pairs (field, value)                   -- HSET on the customer hash
--   d, then d fields                                 -- HDEL (fields of an older layout)
--   r, then r pairs (sorted-set key index, score)    -- ZADD of the customer id ("rem": ZREM),
--                                                    -- one ZADD per sorted set for the call
--   s, then s triples (hash key index, field, delta) -- integer sums, e.g. roll-ups
--                                                    -- (mode "m": s is 0)
-- then, in mode "m" only: bound, the largest sum of |delta| of any one field (it
--               bounds every partial sum of every field), then g, then g groups, one
--               per hash the sums add to: key index, k, then k pairs (field, total delta)
-- then          e, then e groups of the customers with messages, each:
--               customer index (1-based), n, then n triples (kind, id, message JSON)
--               kind "outcome": a closed win-back outcome, written to KEYS[7];
--               "training", "alert", "winback": a message for the outbox; an alert or
--               trigger is also pushed to the feed, unless its id is already in the
--               outbox or published (the feed and the topic see each id once).
--
-- Everything is validated before the first write, and no write can fail:
-- * A customer whose stored version differs from the expected one was written by
--   someone else since it was read (a zombie owner during a rebalance, or the
--   rescorer): nothing of its change (nor its messages) is applied, its index
--   (1-based) is returned, and the offsets and watermarks are left alone so the
--   caller reloads it and tries again.
-- * Every sum is computed here, exactly (each operand and result within
--   +-(2^53 - 1), where a Lua number is an exact integer), and written with HSET,
--   which cannot fail the way HINCRBY does on overflow. A sum that would leave that
--   range, or a stored value that is not such an integer, aborts the whole call
--   before any write: it returns the customer's index, the key and the field.
--
-- Mode "m" is the common case made cheap (a fifth of the sums' arguments, no work per
-- customer): it applies only if no customer lost the compare-and-set and no sum can leave
-- the range (every |stored| + bound within it). Otherwise nothing is written and
-- {conflicts, {}, {}, 1} asks for the call again in mode "c", which decides as above.
--
-- Returns {conflicts, overflow, enqueued}: overflow is {} or {index, key, field};
-- enqueued lists the outbox fields written.
local LIMIT = 9007199254740991  -- 2^53 - 1
local now = ARGV[1]
local feed_length = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local merged = ARGV[4] == 'm'
local pos = 5
local m = tonumber(ARGV[pos])
local offsets_at = pos + 1
pos = pos + 1 + 2 * m
local w = tonumber(ARGV[pos])
local marks_at = pos + 1
pos = pos + 1 + 2 * w

-- Phase 1: read and check everything; nothing is written.
-- changes[i] = {position of its field count, its fields' count, position of its rank
-- count, of its sums' count}: the arguments are read in place, never copied.
local changes = {}
local conflicts = {}
local lost = {}
local sums = {}       -- key -> {field -> new value}
local order = {}      -- keys in first-seen order
local wanted = {}     -- key -> {field, ...}: the stored sums to read, once each
for i = 1, n do
  local expected = ARGV[pos]
  local fields_at = pos + 2
  local deletes_at = fields_at + 1 + 2 * tonumber(ARGV[fields_at])
  local ranks_at = deletes_at + 1 + tonumber(ARGV[deletes_at])
  local sums_at = ranks_at + 1 + 2 * tonumber(ARGV[ranks_at])
  local count = tonumber(ARGV[sums_at])
  changes[i] = {pos + 1, fields_at, deletes_at, ranks_at, sums_at}
  pos = sums_at + 1 + 3 * count
  if (redis.call('HGET', KEYS[i + 7], '_v') or '') ~= expected then
    conflicts[#conflicts + 1] = i
    lost[i] = true
  else
    for k = sums_at + 1, sums_at + 3 * count, 3 do
      local hash, field = KEYS[tonumber(ARGV[k])], ARGV[k + 1]
      local values = sums[hash]
      if values == nil then
        values = {}
        sums[hash] = values
        wanted[hash] = {}
        order[#order + 1] = hash
      end
      if values[field] == nil then
        values[field] = false
        local fields = wanted[hash]
        fields[#fields + 1] = field
      end
    end
  end
end
if merged then
  if #conflicts > 0 then
    return {conflicts, {}, {}, 1}
  end
  -- Every partial sum of a field stays within |stored| + bound, so a stored value
  -- within LIMIT - bound keeps all of them in range.
  local within = LIMIT - tonumber(ARGV[pos])
  local g = tonumber(ARGV[pos + 1])
  pos = pos + 2
  for _ = 1, g do
    local hash, k = KEYS[tonumber(ARGV[pos])], tonumber(ARGV[pos + 1])
    local fields = {}
    for j = 1, k do
      fields[j] = ARGV[pos + 2 * j]
    end
    local stored = redis.call('HMGET', hash, unpack(fields))
    local values = {}
    for j = 1, k do
      local value = tonumber(stored[j] or '0')
      if not value or value % 1 ~= 0 or math.abs(value) > within then
        return {conflicts, {}, {}, 1}
      end
      values[fields[j]] = value + tonumber(ARGV[pos + 1 + 2 * j])
    end
    sums[hash] = values
    order[#order + 1] = hash
    pos = pos + 2 + 2 * k
  end
end
-- Mode "c": one HMGET per hash for every stored sum the batch adds to.
if not merged then
  for _, hash in ipairs(order) do
    local fields = wanted[hash]
    local stored = redis.call('HMGET', hash, unpack(fields))
    local values = sums[hash]
    for k = 1, #fields do
      values[fields[k]] = tonumber(stored[k] or '0')
    end
  end
end
for i = 1, n do
  if not lost[i] then
    local sums_at = changes[i][5]
    for k = sums_at + 1, sums_at + 3 * tonumber(ARGV[sums_at]), 3 do
      local hash, field = KEYS[tonumber(ARGV[k])], ARGV[k + 1]
      local values = sums[hash]
      local value = values[field]
      local delta = tonumber(ARGV[k + 2])
      local total = (value and delta) and value + delta
      if not total or value % 1 ~= 0 or delta % 1 ~= 0 or math.abs(value) > LIMIT
          or math.abs(delta) > LIMIT or math.abs(total) > LIMIT then
        return {conflicts, {i, hash, field}, {}}
      end
      values[field] = total
    end
  end
end

-- Phase 2: write.
-- The rank sets' writes, one ZADD (and one ZREM) per sorted set for the whole call:
-- key index -> {members in first-seen order, member -> its last score or "rem"}.
local ranked, ranked_order = {}, {}
for i = 1, n do
  if not lost[i] then
    local key = KEYS[i + 7]
    local change = changes[i]
    local member, fields_at, deletes_at, ranks_at = ARGV[change[1]], change[2], change[3],
      change[4]
    local f = tonumber(ARGV[fields_at])
    if f > 0 then
      redis.call('HSET', key, unpack(ARGV, fields_at + 1, fields_at + 2 * f))
    end
    local d = tonumber(ARGV[deletes_at])
    if d > 0 then
      redis.call('HDEL', key, unpack(ARGV, deletes_at + 1, deletes_at + d))
    end
    for k = ranks_at + 1, ranks_at + 2 * tonumber(ARGV[ranks_at]), 2 do
      local set = ranked[ARGV[k]]
      if set == nil then
        set = {{}, {}}
        ranked[ARGV[k]] = set
        ranked_order[#ranked_order + 1] = ARGV[k]
      end
      if set[2][member] == nil then
        set[1][#set[1] + 1] = member
      end
      set[2][member] = ARGV[k + 1]
    end
  end
end
-- The same end state as one ZADD or ZREM per member in order: the last score wins.
-- At most 1000 members a command, well within what unpack() can pass.
for _, at in ipairs(ranked_order) do
  local key, members, scores = KEYS[tonumber(at)], ranked[at][1], ranked[at][2]
  local adds, removes = {}, {}
  for _, member in ipairs(members) do
    local score = scores[member]
    if score == 'rem' then
      removes[#removes + 1] = member
      if #removes == 1000 then
        redis.call('ZREM', key, unpack(removes))
        removes = {}
      end
    else
      adds[#adds + 1] = score
      adds[#adds + 1] = member
      if #adds == 2000 then
        redis.call('ZADD', key, unpack(adds))
        adds = {}
      end
    end
  end
  if #adds > 0 then
    redis.call('ZADD', key, unpack(adds))
  end
  if #removes > 0 then
    redis.call('ZREM', key, unpack(removes))
  end
end
for _, hash in ipairs(order) do
  local args = {}
  for field, value in pairs(sums[hash]) do
    args[#args + 1] = field
    args[#args + 1] = string.format('%.0f', value)
  end
  redis.call('HSET', hash, unpack(args))
end

local enqueued = {}
local e = tonumber(ARGV[pos])
pos = pos + 1
local pushed = false
for _ = 1, e do
  local i, count = tonumber(ARGV[pos]), tonumber(ARGV[pos + 1])
  pos = pos + 2
  if not lost[i] then
    for k = pos, pos + 3 * (count - 1), 3 do
      local kind, id, message = ARGV[k], ARGV[k + 1], ARGV[k + 2]
      if kind == 'outcome' then
        redis.call('HSET', KEYS[7], id, message)
      else
        local field = kind .. ':' .. id
        local fresh = true
        if kind ~= 'training' then
          fresh = redis.call('ZSCORE', KEYS[6], id) == false
            and redis.call('HEXISTS', KEYS[3], field) == 0
          if fresh then
            redis.call('LPUSH', KEYS[5],
              '{"type":"' .. kind .. '","at":' .. now .. ',"message":' .. message .. '}')
            pushed = true
          end
        end
        if fresh then
          redis.call('HSET', KEYS[3], field, message)
          redis.call('ZADD', KEYS[4], now, field)
          enqueued[#enqueued + 1] = field
        end
      end
    end
  end
  pos = pos + 3 * count
end
if pushed then
  redis.call('LTRIM', KEYS[5], 0, feed_length - 1)
end

if #conflicts == 0 then
  for j = 0, m - 1 do
    local field = ARGV[offsets_at + 2 * j]
    local value = tonumber(ARGV[offsets_at + 2 * j + 1])
    if value > tonumber(redis.call('HGET', KEYS[1], field) or '-1') then
      redis.call('HSET', KEYS[1], field, value)
    end
  end
  for j = 0, w - 1 do
    local field = ARGV[marks_at + 2 * j]
    local value = tonumber(ARGV[marks_at + 2 * j + 1])
    local stored = redis.call('HGET', KEYS[2], field)
    if stored == false or value > tonumber(stored) then
      redis.call('HSET', KEYS[2], field, value)
    end
  end
end
return {conflicts, {}, enqueued}
