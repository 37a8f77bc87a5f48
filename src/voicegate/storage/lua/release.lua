-- A connection ends: drop its lease if it still owns the session.
-- KEYS: 1 leases (zset), 2 lease owners (hash). ARGV: 1 session id, 2 connection id
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
end
return 1
