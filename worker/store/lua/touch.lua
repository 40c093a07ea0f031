-- ARGV: prefix, account, token, ttl_ms. Renews a batch's lease (between quick retries); 1, or 0 if lost.
local lk = key_lease(ARGV[2])
local cur = redis.call('GET', lk)
if cur ~= ARGV[3] and cur ~= ARGV[3] .. '!' then return 0 end
redis.call('PEXPIRE', lk, tonumber(ARGV[4]))
return 1
