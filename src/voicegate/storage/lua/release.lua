-- A connection ends: if it still owns the session, drop its lease and either mark the session
-- alive now (lost connection: resumable) or end it (closed by the client).
-- KEYS: 1 leases (zset), 2 lease owners (hash), 3 resumable (zset), 4 session record (string)
-- ARGV: 1 session id, 2 connection id, 3 '1' resumable (lost), '0' ended (closed by the client)
-- Returns 1 when the connection owned the session, else 0 (a newer one does: left alone).
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[3] == '0' then
  redis.call('ZREM', KEYS[3], ARGV[1])
else
  local keep = redis.call('PTTL', KEYS[4])
  if keep > 0 then -- no record, nothing to resume
    local t = redis.call('TIME')
    redis.call('ZADD', KEYS[3], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
    if keep > redis.call('PTTL', KEYS[3]) then
      redis.call('PEXPIRE', KEYS[3], keep)
    end
  end
end
return 1
