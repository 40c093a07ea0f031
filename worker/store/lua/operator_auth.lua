--[[
  Authenticate an API key in one round trip: the key's name, role and stored digest, its requests this
  minute (counted here), last_used refreshed at most once a minute.
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] sha256 hex of the presented key  [3] now (epoch s)
  Returns {name, role, digest, rate (its stored per-minute limit, '0' when unset), requests this minute}, or nil when no key has that
  digest (unknown or revoked).
]]
local name = redis.call('HGET', key_operator_keys(), ARGV[2])
if not name then return nil end
local k = key_operator_key(name)
local role, digest, rate, used = unpack(redis.call('HMGET', k, 'role', 'digest', 'rate', 'last_used'))
if not role then return nil end
local now = tonumber(ARGV[3])
local rk = key_operator_rate(name, math.floor(now / 60))
local n = redis.call('INCR', rk)
if n == 1 then redis.call('EXPIRE', rk, 120) end
if not used or now - tonumber(used) >= 60 then redis.call('HSET', k, 'last_used', now) end
return {name, role, digest, rate or '0', n}
