-- ARGV: prefix, identity. Gives the leader lock up on shutdown, if this identity still holds it.
local lk = key_leader()
if redis.call('GET', lk) == ARGV[2] then return redis.call('DEL', lk) end
return 0
