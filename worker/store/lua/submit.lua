--[[
  SUBMIT: store one job and queue it (or schedule it when due later).
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] job id  [3] idempotency key ('' = none)  [4] its ttl, seconds  [5] now
        [6] due_at ('' = now)  [7] account  [8] priority (normal|high)  [9..] field, value, ... (the job
        hash)
  Returns {1, job id, state}, or {0, the job id the idempotency key already stands for}.
]]
--!include prelude
local id, idem, now, due_at, account, priority = ARGV[2], ARGV[3], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local existing = claim_idempotency('m', idem, id, ARGV[4])
if existing then return {0, existing} end
local jk = key_job(id)
-- the same SUBMIT run again (a client retry after a lost reply): the job is stored, answer as the first run
if redis.call('EXISTS', jk) == 1 then return {1, id, redis.call('HGET', jk, 'state')} end
local fields = {}
for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', jk, unpack(fields))
if due_at ~= '' then
  redis.call('HSET', jk, 'state', STATE.SCHEDULED)
  redis.call('ZADD', key_due(), due_at, id)
else
  redis.call('HSET', jk, 'state', STATE.QUEUED)
  enqueue(account, id, priority, false, '')
  wake()
end
return {1, id, redis.call('HGET', jk, 'state')}
