-- The end of a session, shared by release.lua and finish_sent.lua (a session whose last job was sent ends in
-- its FINISH: one round trip fewer per session). Included after prelude.lua (`--!include prelude_release`).
-- Unprocessed jobs go back to the head of their queue, and the account waits in `sched` until `next_at`
-- (its next sendable moment, from the worker's pacing) if it still has jobs. Returns how many claimed ids
-- were still listed, or -1 when the lease was lost (RECOVER has already dealt with the batch).
local function release_session(a, token, next_at)
  local lk = key_lease(a)
  if not holds_lease(redis.call('GET', lk), token) then return -1 end
  local ck = key_claimed(a)
  local ids = redis.call('LRANGE', ck, 0, -1)
  local now_s = redis.call('TIME')[1]
  for i = #ids, 1, -1 do
    local jk = key_job(ids[i])
    local st, priority, camp = unpack(redis.call('HMGET', jk, 'state', 'priority', 'campaign'))
    if st == STATE.QUEUED then
      place(jk, ids[i], a, priority, true, camp, STATE.QUEUED)
    elseif st == STATE.SENDING then
      -- the batch ended without recording this send (an unexpected error mid-call): outcome unknown
      dead_letter(jk, ids[i], STATE.SENDING, DEAD_REASON.UNKNOWN_OUTCOME, 'ambiguous',
        'the call was interrupted before its outcome was recorded; the message may have been sent', now_s)
    end
  end
  redis.call('DEL', ck, lk)
  redis.call('SREM', key_leased(), a)
  if redis.call('LLEN', key_queue_high(a)) > 0 or redis.call('ZCARD', key_sources(a)) > 0 then
    redis.call('ZADD', key_sched(), next_at, a)
    wake()
  end
  return #ids
end
