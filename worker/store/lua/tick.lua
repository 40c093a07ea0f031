--[[
  TICK: the dispatcher's round in one round trip: promote what is due, then the free capacity
  (capacity - sessions out), the accounts due in `sched` (at most that many), and when the next one will be.
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] now (Redis time)  [3] promote limit  [4] capacity (sessions the live workers can
        hold)  [5] most due accounts to return
  Returns {promoted, free, next ('' = none), account...}.
]]
--!include prelude
local now, limit, capacity, most = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local promoted = promote(now, limit)
local free = capacity - redis.call('SCARD', key_leased())
local out = {promoted, free, ''}
if free > 0 then
  for _, a in ipairs(redis.call('ZRANGEBYSCORE', key_sched(), '-inf', now, 'LIMIT', 0, math.min(free, most))) do
    out[#out + 1] = a
  end
end
local soonest = redis.call('ZRANGE', key_sched(), 0, 0, 'WITHSCORES')
if soonest[2] then out[3] = soonest[2] end
return out
