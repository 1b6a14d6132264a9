"""Where RedisState keeps its data in Redis: the key layout and the Lua scripts that use it.

Key layout, all under ``key_prefix``: ``rpm:<window>``/``tpm:<window>``/``fails:<window>`` hashes
of deployment id -> count, ``cooldowns`` sorted set (score = end time), ``inflight:procs`` set and
``inflight:<process>`` hashes, ``latency:<dep>`` lists (newest first), ``hash:<name>``,
``version:<name>``, ``lease:<name>``, ``spend`` hash of budget name -> USD; pub/sub channels are
``<key_prefix><channel>``. The Lua scripts read keys they compute, so the backend expects a single Redis, not a cluster.
"""

from __future__ import annotations

import os
import socket
import uuid

# Count one request unless the window's count has reached the limit. -> {allowed, count}
RESERVE_LUA = """
local n = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if n >= tonumber(ARGV[2]) then return {0, n} end
n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, n}
"""

# Take a parallel slot: the processes' counts (one hash field each) add up to below the limit.
# ARGV: process id, limit, ttl ms. -> 1 taken, 0 all taken. The hash expires when idle, so the
# slots of a process that died holding them come back at the latest ttl after the last take.
SLOT_LUA = """
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end
if total >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# Count one failure; start a cooldown once failures exceed the allowance and none is running.
# ARGV: dep, allowed_fails, cooldown end, now, window ttl ms. -> {started, end time or ''}
FAILURE_LUA = """
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if n <= tonumber(ARGV[2]) then return {0, ''} end
local current = redis.call('ZSCORE', KEYS[2], ARGV[1])
if current and tonumber(current) > tonumber(ARGV[4]) then return {0, current} end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return {1, ARGV[3]}
"""

# Sum the in-flight hashes of the other live processes; forget processes whose hash expired.
# KEYS[1]: the process set. ARGV: hash key prefix, own process id. -> {dep, count, ...}
INFLIGHT_LUA = """
local totals = {}
for _, proc in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if proc ~= ARGV[2] then
    local kv = redis.call('HGETALL', ARGV[1] .. proc)
    if #kv == 0 then redis.call('SREM', KEYS[1], proc) end
    for i = 1, #kv, 2 do totals[kv[i]] = (totals[kv[i]] or 0) + tonumber(kv[i + 1]) end
  end
end
local out = {}
for dep, n in pairs(totals) do
  if n > 0 then out[#out + 1] = dep; out[#out + 1] = n end
end
return out
"""


def process_id() -> str:
    """A name for this process's in-flight hash: unique across hosts, workers and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RedisKeys:
    """The keys of one proxy (one ``prefix``) as seen from one process (``proc``)."""

    def __init__(self, prefix: str, proc: str) -> None:
        self.prefix = prefix
        self.proc = proc
        self.cooldowns = f"{prefix}cooldowns"
        self.spend = f"{prefix}spend"
        self.inflight_procs = f"{prefix}inflight:procs"
        #: what INFLIGHT_LUA prepends to a process id to find its hash
        self.inflight_prefix = f"{prefix}inflight:"
        self.own_inflight = f"{prefix}inflight:{proc}"

    def rpm(self, bucket: int) -> str:
        return f"{self.prefix}rpm:{bucket}"

    def tpm(self, bucket: int) -> str:
        return f"{self.prefix}tpm:{bucket}"

    def fails(self, bucket: int) -> str:
        return f"{self.prefix}fails:{bucket}"

    def latency(self, dep_id: str) -> str:
        return f"{self.prefix}latency:{dep_id}"

    def hash(self, name: str) -> str:
        return f"{self.prefix}hash:{name}"

    def slots(self, name: str) -> str:
        return f"{self.prefix}slots:{name}"

    def lease(self, name: str) -> str:
        return f"{self.prefix}lease:{name}"

    def version(self, name: str) -> str:
        return f"{self.prefix}version:{name}"

    def channel(self, channel: str) -> str:
        return self.prefix + channel
