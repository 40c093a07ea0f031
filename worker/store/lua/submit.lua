--!include prelude
-- ARGV: prefix, job_id, idem_key|'', idem_ttl_s, now, due_at|'', account, priority, field, value, ...
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
