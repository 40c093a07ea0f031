--[[
  Give the dispatcher's leader lock up on shutdown, if this identity still holds it.
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] identity
  Returns 1 when it was given up, else 0.
]]
local lk = key_leader()
if redis.call('GET', lk) == ARGV[2] then return redis.call('DEL', lk) end
return 0
