-- Write a batch of customer changes atomically, each with compare-and-set.
--
-- KEYS[1]       applied offsets hash   (field "topic/partition" -> last applied offset)
-- KEYS[2]       watermarks hash        (field "topic/partition" -> max event time, ms)
-- KEYS[3..]     customer hashes, one per change
-- ARGV[1]       m, then m pairs (field, offset)      -- only ever move forward
-- then          w, then w pairs (field, event ms)    -- only ever move forward
-- then, per customer key in order, one JSON array of strings (one argument per customer
-- keeps the client's encoding of the call cheap):
--   [expected version ("" for a new customer),
--    [field, value, ...],                            -- HSET on the customer hash
--    [sorted-set key, score, ...],                   -- ZADD of the customer id ("rem": ZREM)
--    [hash key, field, delta, ...]]                  -- HINCRBY, e.g. roll-ups, histograms
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
  local change = cjson.decode(ARGV[pos])
  pos = pos + 1
  local expected, fields, ranks, incrs = change[1], change[2], change[3], change[4]
  local current = redis.call('HGET', key, '_v') or ''
  if current == expected then
    if #fields > 0 then
      redis.call('HSET', key, unpack(fields))
    end
    local member = redis.call('HGET', key, 'customer_id')
    for k = 1, #ranks, 2 do
      if ranks[k + 1] == 'rem' then
        redis.call('ZREM', ranks[k], member)
      else
        redis.call('ZADD', ranks[k], ranks[k + 1], member)
      end
    end
    for k = 1, #incrs, 3 do
      redis.call('HINCRBY', incrs[k], incrs[k + 1], incrs[k + 2])
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
