-- Resume without an id: claim the user's newest resumable session whose lease is free or stale,
-- atomically, so that two connections of one user never get the same session.
-- KEYS: 1 resumable (zset), 2 leases (zset), 3 lease owners (hash)
-- ARGV: 1 ttl s, 2 max concurrent, 3 lease ms, 4 connection id, 5 grace ms, 6 stale ms,
--       7 the prefix of the user's session keys
-- The candidates' record keys are built from ARGV[7]: which sessions are candidates is only
-- known inside the script. They share the declared keys' hash slot (the user's {tag}), so
-- this holds on Cluster.
-- Returns false when no session qualifies, {0, count} when the only candidates need a slot and
-- the user is at the cap, else the record.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease_ms, stale_ms = tonumber(ARGV[3]), tonumber(ARGV[6])

-- Older than the grace: never resumable again, whatever happens next.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[5])))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local open = redis.call('ZCARD', KEYS[2])
local at_cap = false
for _, sid in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[7] .. sid
  local record = redis.call('GET', key)
  if not record then
    redis.call('ZREM', KEYS[1], sid)
  else
    local expiry = redis.call('ZSCORE', KEYS[2], sid)
    local take = false
    if not expiry then
      if open < tonumber(ARGV[2]) then
        take = true
      else
        at_cap = true -- a stale lease further on needs no slot: keep looking
      end
    elseif tonumber(expiry) - lease_ms < now - stale_ms then
      take = true -- not renewed lately: its holder is presumed dead
    end
    if take then
      redis.call('ZADD', KEYS[2], now + lease_ms, sid)
      redis.call('HSET', KEYS[3], sid, ARGV[4])
      redis.call('PEXPIRE', KEYS[2], lease_ms)
      redis.call('PEXPIRE', KEYS[3], lease_ms)
      redis.call('EXPIRE', key, ARGV[1])
      local keep = tonumber(ARGV[1]) * 1000
      redis.call('ZADD', KEYS[1], now, sid)
      if redis.call('PTTL', KEYS[1]) < keep then
        redis.call('PEXPIRE', KEYS[1], keep)
      end
      return record
    end
  end
end
if at_cap then
  return {0, open}
end
return false
