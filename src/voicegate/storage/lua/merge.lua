-- Write-back after an outage: merge what memory recorded with what Redis holds.
-- KEYS: 1 session record (string; unused when ARGV[1] is ''), 2 admissions (zset)
-- ARGV: 1 record json or '', 2 record updated_at, 3 ttl s, 4 window ms, 5.. score, member pairs
-- A record is written unless Redis holds a newer one; hits are added (a set union).
if ARGV[1] ~= '' then
  local current = redis.call('GET', KEYS[1])
  local newer = false
  if current then
    local ok, decoded = pcall(cjson.decode, current)
    newer = ok and tonumber(decoded['updated_at']) ~= nil
      and tonumber(decoded['updated_at']) >= tonumber(ARGV[2])
  end
  if not newer then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
  end
end
if #ARGV > 4 then
  for i = 5, #ARGV, 2 do
    redis.call('ZADD', KEYS[2], ARGV[i], ARGV[i + 1])
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return 1
