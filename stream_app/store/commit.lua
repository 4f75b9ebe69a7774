-- Write a batch of customer states with compare-and-set, then the applied offsets.
--
-- KEYS[1]       the applied-offsets hash (field "topic/partition" -> last applied offset)
-- KEYS[2..n+1]  customer hashes
-- ARGV[1]       number of offset pairs m, followed by m pairs (field, offset)
-- then, per customer key in order: expected version ("" for a new customer),
-- number of field pairs f, then f pairs (field, value), then the number of
-- ranking entries z, then z pairs (sorted-set key, score) for this customer's
-- member (its id, stored as field "customer_id").
--
-- A customer whose stored version differs from the expected one was written by
-- someone else since it was read (a zombie owner during a rebalance): it is not
-- written, its index is returned, and the offsets are not advanced, so the
-- caller reloads it and tries again. Offsets only ever move forward.
local m = tonumber(ARGV[1])
local pos = 2 + 2 * m
local conflicts = {}
for i = 2, #KEYS do
  local expected = ARGV[pos]
  local f = tonumber(ARGV[pos + 1])
  pos = pos + 2
  local z = tonumber(ARGV[pos + 2 * f])
  local current = redis.call('HGET', KEYS[i], '_v') or ''
  if current == expected then
    redis.call('HSET', KEYS[i], unpack(ARGV, pos, pos + 2 * f - 1))
    local member = redis.call('HGET', KEYS[i], 'customer_id')
    for k = 0, z - 1 do
      local at = pos + 2 * f + 1 + 2 * k
      redis.call('ZADD', ARGV[at], ARGV[at + 1], member)
    end
  else
    conflicts[#conflicts + 1] = i - 1
  end
  pos = pos + 2 * f + 1 + 2 * z
end
if #conflicts == 0 then
  for j = 0, m - 1 do
    local field = ARGV[2 + 2 * j]
    local offset = tonumber(ARGV[3 + 2 * j])
    local stored = tonumber(redis.call('HGET', KEYS[1], field) or '-1')
    if offset > stored then
      redis.call('HSET', KEYS[1], field, offset)
    end
  end
end
return conflicts
