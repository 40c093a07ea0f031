--[[
  End a probe: when it made a vendor call, the account's pacing records it (end = Redis TIME, after the
  answer: the next send waits its full gap), then the lease is freed.
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] account  [3] token  [4] called (0|1)
  Returns 1, or 0 when the lease was no longer the probe's.
]]
local a = ARGV[2]
local lk = key_lease(a)
if ARGV[4] == '1' then
  local t = redis.call('TIME')
  local now = string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
  redis.call('HSET', key_pace(a), 'last_end', now)
  redis.call('LPUSH', key_pace_window(a), now)
end
if redis.call('GET', lk) ~= ARGV[3] then return 0 end
redis.call('DEL', lk)
return 1
