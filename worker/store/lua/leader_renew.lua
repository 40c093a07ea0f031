--[[
  Take or renew the dispatcher's leader lock.
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] identity  [3] ttl_ms
  Returns 1 if this identity holds the lock, else 0.
]]
local lk = key_leader()
if redis.call('GET', lk) == ARGV[2] then return redis.call('PEXPIRE', lk, ARGV[3]) end
return redis.call('SET', lk, ARGV[2], 'NX', 'PX', ARGV[3]) and 1 or 0
