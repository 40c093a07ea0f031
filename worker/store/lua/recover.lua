--[[
  RECOVER: for every account whose lease expired with jobs still claimed, untouched jobs go back to the
  head of their queue and a `sending` job becomes an unknown outcome (dead-lettered for review).
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] now
  Returns {jobs requeued, unknown outcomes}.
]]
--!include prelude
local now = ARGV[2]
local requeued, unknown = 0, 0
for _, a in ipairs(redis.call('SMEMBERS', key_leased())) do
  if redis.call('EXISTS', key_lease(a)) == 0 then
    local ck = key_claimed(a)
    local ids = redis.call('LRANGE', ck, 0, -1)
    for i = #ids, 1, -1 do
      local jk = key_job(ids[i])
      local st, priority, camp = unpack(redis.call('HMGET', jk, 'state', 'priority', 'campaign'))
      if st == STATE.SENDING then
        dead_letter(jk, ids[i], STATE.SENDING, DEAD_REASON.UNKNOWN_OUTCOME, 'ambiguous',
          'the worker holding this call died; the message may have been sent', now)
        unknown = unknown + 1
      elseif st == STATE.QUEUED then
        if place(jk, ids[i], a, priority, true, camp, STATE.QUEUED) then requeued = requeued + 1 end
      end
    end
    redis.call('DEL', ck)
    redis.call('SREM', key_leased(), a)
    redis.call('ZADD', key_sched(), 0, a)
  end
end
return {requeued, unknown}
