-- Write-back after an outage: resumable marks memory set, merged as the latest (ZADD GT).
-- KEYS: 1 resumable (zset). ARGV: triples of session id, last-alive ms, keep ms (the record's
-- remaining lifetime: the key lives at least that long, never shortened).
for i = 1, #ARGV, 3 do
  redis.call('ZADD', KEYS[1], 'GT', ARGV[i + 1], ARGV[i])
  if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[i + 2]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[i + 2])
  end
end
return 1
