-- Heartbeat of a connection: extend its lease unless another connection owns the session now;
-- a session still marked resumable is marked alive now (ZADD XX: an ended one stays ended).
-- KEYS: 1 leases (zset), 2 lease owners (hash), 3 resumable (zset), 4 session record (string)
-- ARGV: 1 lease ms, 2 session id, 3 connection id
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
if redis.call('ZSCORE', KEYS[3], ARGV[2]) then
  redis.call('ZADD', KEYS[3], 'XX', now, ARGV[2])
  -- The marks live as long as the longest-lived record they point to (never shortened).
  local keep = redis.call('PTTL', KEYS[4])
  if keep > redis.call('PTTL', KEYS[3]) then
    redis.call('PEXPIRE', KEYS[3], keep)
  end
end
return 1
