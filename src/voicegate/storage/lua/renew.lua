-- Heartbeat of a connection: extend its lease unless another connection owns the session now.
-- KEYS: 1 leases (zset), 2 lease owners (hash). ARGV: 1 lease ms, 2 session id, 3 connection id
-- Returns 1 when renewed, 0 when taken over.
local owner = redis.call('HGET', KEYS[2], ARGV[2])
if owner and owner ~= ARGV[3] then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
