-- Write a batch of customer changes atomically, each with compare-and-set.
--
-- KEYS[1]       applied offsets hash   (field "topic/partition" -> last applied offset)
-- KEYS[2]       watermarks hash        (field "topic/partition" -> max event time, ms)
-- KEYS[3..]     customer hashes, one per change
-- ARGV[1]       m, then m pairs (field, offset)      -- only ever move forward
-- then          w, then w pairs (field, event ms)    -- only ever move forward
-- then, per customer key in order:
--   expected version ("" for a new customer),
--   f, then f pairs (field, value)                   -- HSET on the customer hash
--   z, then z pairs (sorted-set key, score)          -- ZADD of the customer id ("rem": ZREM)
--   d, then d triples (hash key, field, delta)       -- HINCRBY, e.g. roll-ups, histograms
--
-- A customer whose stored version differs from the expected one was written by
-- someone else since it was read (a zombie owner during a rebalance, or the
-- rescorer): nothing of its change is applied, its index (1-based) is returned,
-- and the offsets and watermarks are left alone so the caller reloads it and
-- tries again. Everything in one call is atomic: a crash leaves all or nothing.
local pos = 1
local m = tonumber(ARGV[pos])
local offsets_at = pos + 1
pos = pos + 1 + 2 * m
local w = tonumber(ARGV[pos])
local marks_at = pos + 1
pos = pos + 1 + 2 * w
local conflicts = {}
for i = 3, #KEYS do
  local key = KEYS[i]
  local expected = ARGV[pos]
  local f = tonumber(ARGV[pos + 1])
  local fields_at = pos + 2
  pos = fields_at + 2 * f
  local z = tonumber(ARGV[pos])
  local ranks_at = pos + 1
  pos = ranks_at + 2 * z
  local d = tonumber(ARGV[pos])
  local incr_at = pos + 1
  pos = incr_at + 3 * d
  local current = redis.call('HGET', key, '_v') or ''
  if current == expected then
    if f > 0 then
      redis.call('HSET', key, unpack(ARGV, fields_at, fields_at + 2 * f - 1))
    end
    local member = redis.call('HGET', key, 'customer_id')
    for k = 0, z - 1 do
      local score = ARGV[ranks_at + 2 * k + 1]
      if score == 'rem' then
        redis.call('ZREM', ARGV[ranks_at + 2 * k], member)
      else
        redis.call('ZADD', ARGV[ranks_at + 2 * k], score, member)
      end
    end
    for k = 0, d - 1 do
      local at = incr_at + 3 * k
      redis.call('HINCRBY', ARGV[at], ARGV[at + 1], ARGV[at + 2])
    end
  else
    conflicts[#conflicts + 1] = i - 2
  end
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
return conflicts
