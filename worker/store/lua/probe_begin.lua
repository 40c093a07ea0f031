--[[
  Take the account's lease for an operator's probe (the resume check): only when no session holds it
  and no dead one awaits recovery, so a probe is never a second call in flight for the account.
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] account  [3] token  [4] ttl_ms
  Returns 1, or 0 when the account is busy.
]]
local a = ARGV[2]
if redis.call('SISMEMBER', key_leased(), a) == 1 then return 0 end
if redis.call('SET', key_lease(a), ARGV[3], 'NX', 'PX', tonumber(ARGV[4])) then return 1 end
return 0
