"""The Redis store's Lua scripts, all in one place, registered once per client and then called by their SHA.

`Scripts(client)` registers each with redis-py's `register_script`: a call sends `EVALSHA`, never the script's
text, and redis-py loads the text again only when the server answers NOSCRIPT (after a restart or a
`SCRIPT FLUSH`). Each script is one atomic step across every host sharing the Redis.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis import Redis
    from redis.commands.core import Script

# Every script that changes a job's state shares these helpers, so the running totals (KEYS[7], a hash: jobs per
# state, `bytes` of the waiting ones, `accepted` ever added) move in the same atomic step as the job: stats read
# the hash, never the jobs. Standard KEYS: jobs, due, inflight, dead, done, waiting, totals (then the script's own).
PRELUDE = """
local STATES = {'pending', 'inflight', 'dead', 'done'}
local SETS = {pending = KEYS[2], inflight = KEYS[3], dead = KEYS[4], done = KEYS[5]}
local function leave(id)
  local old = nil
  local size = redis.call('HSTRLEN', KEYS[1], id)
  for _, name in ipairs(STATES) do
    if redis.call('ZREM', SETS[name], id) == 1 then
      old = name
      redis.call('HINCRBY', KEYS[7], name, -1)
      if name == 'pending' or name == 'inflight' then redis.call('HINCRBY', KEYS[7], 'bytes', -size) end
    end
  end
  redis.call('ZREM', KEYS[6], id)
  return old
end
local function enter(id, state, score, created, body)
  redis.call('ZADD', SETS[state], score, id)
  redis.call('HINCRBY', KEYS[7], state, 1)
  if state == 'pending' or state == 'inflight' then
    redis.call('HINCRBY', KEYS[7], 'bytes', string.len(body))
    redis.call('ZADD', KEYS[6], created, id)
  end
end
"""

# Claim atomically across hosts: expired leases, then due pending jobs, each an ordered, limited range.
# KEYS: standard.  ARGV: now, lease, limit.
CLAIM = PRELUDE + """
local now, lease, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
local function take(ids, uncertain)
  for _, id in ipairs(ids) do
    local body = redis.call('HGET', KEYS[1], id)
    if body then
      local job = cjson.decode(body)
      job['uncertain'] = uncertain or job['uncertain'] == true
      job['state'] = 'inflight'
      job['lease_until'] = now + lease
      job['attempts'] = job['attempts'] + 1
      body = cjson.encode(job)
      leave(id)
      redis.call('HSET', KEYS[1], id, body)
      local since = job['created_at']  -- Job.waiting_since: an operator's retry starts the wait afresh
      if type(job['retried_at']) == 'number' and job['retried_at'] > since then since = job['retried_at'] end
      enter(id, 'inflight', now + lease, since, body)
      table.insert(out, body)
    end
  end
end
take(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, limit), true)
local left = limit - #out
if left > 0 then take(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, left), false) end
return out
"""

# Add a job only if its id is new. KEYS: standard, the submission's set.  ARGV: id, body, state, score, created_at.
ADD = PRELUDE + """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
enter(ARGV[1], ARGV[3], ARGV[4], ARGV[5], ARGV[2])
redis.call('SADD', KEYS[8], ARGV[1])
redis.call('HINCRBY', KEYS[7], 'accepted', 1)
return 1
"""

# Write a job whatever it held before. KEYS: standard, the submission's set.  ARGV: id, body, state, score, created_at.
PUT = PRELUDE + """
if leave(ARGV[1]) == nil and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  redis.call('HINCRBY', KEYS[7], 'accepted', 1)
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[8], ARGV[1])
enter(ARGV[1], ARGV[3], ARGV[4], ARGV[5], ARGV[2])
return 1
"""

# Replace or delete one job if its state is one of ARGV[2] (comma-separated), keeping every index in step.
# KEYS: standard, the submission's set.  ARGV: id, states, new body ('' deletes), its state, score, created_at.
SWAP = PRELUDE + """
local body = redis.call('HGET', KEYS[1], ARGV[1])
if not body then return 0 end
local state = cjson.decode(body)['state']
if not string.find(',' .. ARGV[2] .. ',', ',' .. state .. ',', 1, true) then return 0 end
leave(ARGV[1])
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[8], ARGV[1])
  return 1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
enter(ARGV[1], ARGV[4], ARGV[5], ARGV[6], ARGV[3])
return 1
"""

# Delete delivered jobs. KEYS: standard.  ARGV: pairs of job id and its submission's set.
PURGE = PRELUDE + """
for i = 1, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[5], ARGV[i]) then
    leave(ARGV[i])
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('SREM', ARGV[i + 1], ARGV[i])
  end
end
return 1
"""

# On opening the store: count the totals once if they are missing (a queue written by an older version),
# drop the per-job sizes that version kept, and make the sentinel that tells a wiped store from an empty one.
# KEYS: standard, the old sizes hash, the sentinel.  ARGV: a new sentinel value.  Returns the sentinel.
INIT = """
if redis.call('EXISTS', KEYS[7]) == 0 then
  local names = {pending = KEYS[2], inflight = KEYS[3], dead = KEYS[4], done = KEYS[5]}
  for name, key in pairs(names) do redis.call('HSET', KEYS[7], name, redis.call('ZCARD', key)) end
  local size = 0
  for _, id in ipairs(redis.call('ZRANGE', KEYS[6], 0, -1)) do size = size + redis.call('HSTRLEN', KEYS[1], id) end
  redis.call('HSET', KEYS[7], 'bytes', size)
  redis.call('HSET', KEYS[7], 'accepted', redis.call('HLEN', KEYS[1]))
end
redis.call('DEL', KEYS[8])
local sentinel = redis.call('GET', KEYS[9])
if sentinel then return sentinel end
redis.call('SET', KEYS[9], ARGV[1])
return ARGV[1]
"""

# Erase a submission's jobs (ARGV: count of jobs, then id, stub pairs) only if it still has that many, all done.
ERASE = """
local ids = redis.call('SMEMBERS', KEYS[2])
if #ids ~= tonumber(ARGV[1]) then return 0 end
for i = 2, #ARGV, 2 do
  local body = redis.call('HGET', KEYS[1], ARGV[i])
  if not body or cjson.decode(body)['state'] ~= 'done' then return 0 end
end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""

# Delete KEYS[1] if it still holds ARGV[1]: an idempotency key still in flight, a shared value not replaced since.
DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Delete KEYS[1] if its value ends with ARGV[1] (a shared token that was refused or expired).
DELETE_IF_ENDS_WITH = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, -string.len(ARGV[1])) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Set KEYS[1] to ARGV[1] for ARGV[2] ms unless it holds a value; the value it holds now.
SET_UNLESS_HELD = """
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"""


class Scripts:
    """Every script, registered on one Redis client (no round trip: the SHA is computed here)."""

    def __init__(self, client: Redis) -> None:
        self.claim: Script = client.register_script(CLAIM)
        self.add: Script = client.register_script(ADD)
        self.put: Script = client.register_script(PUT)
        self.swap: Script = client.register_script(SWAP)
        self.purge: Script = client.register_script(PURGE)
        self.init: Script = client.register_script(INIT)
        self.erase: Script = client.register_script(ERASE)
        self.delete_if_equal: Script = client.register_script(DELETE_IF_EQUAL)
        self.delete_if_ends_with: Script = client.register_script(DELETE_IF_ENDS_WITH)
        self.set_unless_held: Script = client.register_script(SET_UNLESS_HELD)
