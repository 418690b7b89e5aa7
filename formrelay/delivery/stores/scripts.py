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

# Claim atomically across hosts: due pending jobs, then expired leases, each moved to the inflight set.
# KEYS: due, inflight, jobs.  ARGV: now, lease, limit.
CLAIM = """
local now, lease, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
local function take(ids, uncertain)
  for _, id in ipairs(ids) do
    local body = redis.call('HGET', KEYS[3], id)
    if body then
      local job = cjson.decode(body)
      job['uncertain'] = uncertain or job['uncertain'] == true
      job['state'] = 'inflight'
      job['lease_until'] = now + lease
      job['attempts'] = job['attempts'] + 1
      body = cjson.encode(job)
      redis.call('HSET', KEYS[3], id, body)
      redis.call('ZREM', KEYS[1], id)
      redis.call('ZADD', KEYS[2], now + lease, id)
      table.insert(out, body)
    end
  end
end
take(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit), true)
local left = limit - #out
if left > 0 then take(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, left), false) end
return out
"""

# Add a job only if its id is new: its body, its due/dead entry, its waiting entry and size, and its place
# among its submission's jobs (KEYS[5]).
# KEYS: jobs, the job's state's sorted set, waiting, sizes, the submission's set.
# ARGV: id, body, score, created_at, size, waiting (1/0).
ADD = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('SADD', KEYS[5], ARGV[1])
if ARGV[6] == '1' then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[5])
end
return 1
"""

# Replace or delete one job if its state is one of ARGV[2] (comma-separated), keeping every index in step.
# KEYS: jobs, due, inflight, dead, done, the submission's set, waiting, sizes.
# ARGV: id, states, new body ('' deletes), its state's index among KEYS, its score, created_at, waiting (1/0).
SWAP = """
local body = redis.call('HGET', KEYS[1], ARGV[1])
if not body then return 0 end
local state = cjson.decode(body)['state']
if not string.find(',' .. ARGV[2] .. ',', ',' .. state .. ',', 1, true) then return 0 end
for i = 2, 5 do redis.call('ZREM', KEYS[i], ARGV[1]) end
redis.call('ZREM', KEYS[7], ARGV[1])
redis.call('HDEL', KEYS[8], ARGV[1])
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[6], ARGV[1])
  return 1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[tonumber(ARGV[4])], ARGV[5], ARGV[1])
if ARGV[7] == '1' then
  redis.call('ZADD', KEYS[7], ARGV[6], ARGV[1])
  redis.call('HSET', KEYS[8], ARGV[1], string.len(ARGV[3]))
end
return 1
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

# Counts and sizes in one round trip, computed inside Redis: no job body crosses the wire.
STATS = """
local oldest = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
local size = 0
for _, v in ipairs(redis.call('HVALS', KEYS[5])) do size = size + tonumber(v) end
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[3]),
        oldest[2] or false, size}
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
        self.swap: Script = client.register_script(SWAP)
        self.erase: Script = client.register_script(ERASE)
        self.stats: Script = client.register_script(STATS)
        self.delete_if_equal: Script = client.register_script(DELETE_IF_EQUAL)
        self.delete_if_ends_with: Script = client.register_script(DELETE_IF_ENDS_WITH)
        self.set_unless_held: Script = client.register_script(SET_UNLESS_HELD)
