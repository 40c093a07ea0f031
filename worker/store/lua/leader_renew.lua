-- ARGV: prefix, identity, ttl_ms. Takes or renews the dispatcher's leader lock: 1 if this identity holds it.
local lk = key_leader()
if redis.call('GET', lk) == ARGV[2] then return redis.call('PEXPIRE', lk, ARGV[3]) end
return redis.call('SET', lk, ARGV[2], 'NX', 'PX', ARGV[3]) and 1 or 0
