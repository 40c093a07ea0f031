--[[
  Renew a session's lease (between quick retries).
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] account  [3] token  [4] ttl_ms
  Returns 1, or 0 if the lease was lost.
]]
local lk = key_lease(ARGV[2])
local cur = redis.call('GET', lk)
if cur ~= ARGV[3] and cur ~= ARGV[3] .. '!' then return 0 end
redis.call('PEXPIRE', lk, tonumber(ARGV[4]))
return 1
