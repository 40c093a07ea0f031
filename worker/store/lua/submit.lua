--[[
  SUBMIT: store one job and queue it (or schedule it when due later).
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] job id  [3] idempotency key ('' = none)  [4] its ttl, seconds  [5] now
        [6] due_at ('' = now)  [7] account  [8] priority (normal|high)  [9] the operator key that submitted
        it ('' = none or the bootstrap token)  [10] that key's SHA-256  [11..] field, value, ... (the job
        hash)
  A message of an operator key is listed under it (opmsgs:{name}, scored by when it is due: its revocation
  cancels what is not sent yet); one whose key was revoked while it was being submitted (opkey:{name} gone
  or holding another key's digest) is stored cancelled.
  Returns {1, job id, state}, or {0, the job id the idempotency key already stands for}.
]]
--!include prelude
local id, idem, now, due_at, account, priority = ARGV[2], ARGV[3], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local owner, owner_digest = ARGV[9], ARGV[10]
local existing = claim_idempotency('m', idem, id, ARGV[4])
if existing then return {0, existing} end
local jk = key_job(id)
-- the same SUBMIT run again (a client retry after a lost reply): the job is stored, answer as the first run
if redis.call('EXISTS', jk) == 1 then return {1, id, redis.call('HGET', jk, 'state')} end
local fields = {}
for i = 11, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', jk, unpack(fields))
if owner ~= '' then
  -- which key it is (not only its name): BEGIN cancels it instead of sending once that key is gone
  redis.call('HSET', jk, 'owner_key', owner_digest)
  -- listed by when it is due (a send_at far ahead stays listed); a few entries past the retention are
  -- looked at per submission: one whose job ended (or expired) leaves, one still unsent stays
  local listed, kept = key_key_messages(owner), tonumber(redis.call('HGET', key_config(), 'retention_s') or '0')
  redis.call('ZADD', listed, math.max(tonumber(now), tonumber(due_at) or 0), id)
  if kept and kept > 0 then
    for _, old in ipairs(redis.call('ZRANGEBYSCORE', listed, '-inf', tonumber(now) - kept, 'LIMIT', 0, 10)) do
      local st = redis.call('HGET', key_job(old), 'state')
      if st == STATE.SCHEDULED or st == STATE.QUEUED or st == STATE.RETRYING then
        redis.call('ZADD', listed, now, old)
      else
        redis.call('ZREM', listed, old)
      end
    end
  end
end
if owner_gone(owner, owner_digest) then
  redis.call('HSET', jk, 'state', STATE.CANCELLED, 'cancelled_at', now)
  retain(id)
elseif due_at ~= '' then
  redis.call('HSET', jk, 'state', STATE.SCHEDULED)
  redis.call('ZADD', key_due(), due_at, id)
else
  redis.call('HSET', jk, 'state', STATE.QUEUED)
  enqueue(account, id, priority, false, '')
  wake()
end
return {1, id, redis.call('HGET', jk, 'state')}
