-- Resume by id: take over the lease of an existing session, refresh its TTL and mark it alive
-- now, atomically.
-- KEYS: 1 session record (string), 2 leases (zset), 3 lease owners (hash), 4 resumable (zset)
-- ARGV: 1 ttl s, 2 max concurrent, 3 lease ms, 4 session id, 5 connection id
-- Returns false when the session is unknown, {0, count} at the concurrency cap, else the record.
local record = redis.call('GET', KEYS[1])
if not record then
  return false
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if not redis.call('ZSCORE', KEYS[2], ARGV[4]) then
  local open = redis.call('ZCARD', KEYS[2])
  if open >= tonumber(ARGV[2]) then
    return {0, open}
  end
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[4])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[1])
local keep = tonumber(ARGV[1]) * 1000
redis.call('ZADD', KEYS[4], now, ARGV[4])
if redis.call('PTTL', KEYS[4]) < keep then
  redis.call('PEXPIRE', KEYS[4], keep)
end
return record
