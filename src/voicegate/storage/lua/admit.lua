-- Admission of a new session, atomically: rate limit, concurrency cap, record, lease, and the
-- resumable mark.
-- KEYS: 1 admissions (zset), 2 session record (string), 3 leases (zset), 4 lease owners (hash),
--       5 resumable (zset)
-- ARGV: 1 limit, 2 window ms, 3 record json, 4 ttl s, 5 max concurrent, 6 lease ms,
--       7 session id, 8 connection id
-- The hit's member is the session id, so a write-back after an outage never counts it twice.
-- Returns {allowed 0|1, refusal, count, retry_after_ms}. Time is Redis's own (TIME).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, 'rate_limit', count, tonumber(oldest[2]) + window - now}
end

redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local open = redis.call('ZCARD', KEYS[3])
if open >= tonumber(ARGV[5]) then
  return {0, 'concurrency', open, 0}
end

local lease_until = now + tonumber(ARGV[6])
redis.call('ZADD', KEYS[1], now, ARGV[7])
redis.call('PEXPIRE', KEYS[1], window)
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
redis.call('ZADD', KEYS[3], lease_until, ARGV[7])
redis.call('HSET', KEYS[4], ARGV[7], ARGV[8])
redis.call('PEXPIRE', KEYS[3], ARGV[6])
redis.call('PEXPIRE', KEYS[4], ARGV[6])
-- The marks live as long as the longest-lived record they point to (never shortened).
local keep = tonumber(ARGV[4]) * 1000
redis.call('ZADD', KEYS[5], now, ARGV[7])
if redis.call('PTTL', KEYS[5]) < keep then
  redis.call('PEXPIRE', KEYS[5], keep)
end
return {1, 'ok', count + 1, 0}
