-- pktgen-DPDK: the traffic of scripts/bench.sh from pktgen port 0 into
-- ctgate's inside port; ctgate's outside port comes back to pktgen port 1
-- (which only receives). See scripts/pktgen/README.md.
--
-- One-way UDP 192.0.2.10-249 -> 198.51.100.10:9, CTGATE_FLOWS distinct flows
-- (source address x source port), frames of CTGATE_SIZE bytes (64..1518, FCS
-- included), or CTGATE_SIZE=sweep for 64 -> 1518 in steps of CTGATE_STEP.
--
--   CTGATE_FLOWS=1000000 CTGATE_SIZE=64 CTGATE_IN_MAC=02:00:00:00:00:01 \
--     pktgen -l 0-2 -n 4 -a 0000:01:00.0 -a 0000:01:00.1 -- -P -m "[1].0,[2].1" -f scripts/pktgen/ctgate_range.lua
package.path = package.path .. ";?.lua;test/?.lua;app/?.lua;"
require "Pktgen"

local flows = tonumber(os.getenv("CTGATE_FLOWS") or "1000")
local size = os.getenv("CTGATE_SIZE") or "64"
local step = tonumber(os.getenv("CTGATE_STEP") or "1")
local in_mac = os.getenv("CTGATE_IN_MAC") or "02:00:00:00:00:01"
local rate = tonumber(os.getenv("CTGATE_RATE") or "100")     -- percent of line rate
local seconds = tonumber(os.getenv("CTGATE_SECONDS") or "0") -- 0: leave it running

local function gcd(a, b)
    while b ~= 0 do a, b = b, a % b end
    return a
end

-- Range mode steps every field by its increment on every packet, so a flow is
-- (address i mod A, port i mod P): A * P distinct flows when gcd(A, P) = 1.
-- Up to 240 client addresses (SNAT picks the translated address by a hash of
-- the source, as the kernel does: spread the flows over many clients).
local addrs = math.min(flows, 240)
local ports = math.ceil(flows / addrs)
while gcd(addrs, ports) ~= 1 do ports = ports + 1 end
if 1024 + ports - 1 > 65535 then error("at most 15 million flows") end
local last_ip = string.format("192.0.2.%d", 10 + addrs - 1)
printf("ctgate_range: %d flows (%d addresses x %d ports), size %s, to %s\n", addrs * ports, addrs, ports, size, in_mac)

pktgen.stop("all")
pktgen.range.dst_mac("0", "start", in_mac)
pktgen.range.src_ip("0", "start", "192.0.2.10")
pktgen.range.src_ip("0", "inc", "0.0.0.1")
pktgen.range.src_ip("0", "min", "192.0.2.10")
pktgen.range.src_ip("0", "max", last_ip)
pktgen.range.dst_ip("0", "start", "198.51.100.10")
pktgen.range.dst_ip("0", "inc", "0.0.0.0")
pktgen.range.dst_ip("0", "min", "198.51.100.10")
pktgen.range.dst_ip("0", "max", "198.51.100.10")
pktgen.range.ip_proto("0", "udp")
pktgen.range.src_port("0", "start", 1024)
pktgen.range.src_port("0", "inc", 1)
pktgen.range.src_port("0", "min", 1024)
pktgen.range.src_port("0", "max", 1024 + ports - 1)
pktgen.range.dst_port("0", "start", 9)
pktgen.range.dst_port("0", "inc", 0)
pktgen.range.dst_port("0", "min", 9)
pktgen.range.dst_port("0", "max", 9)
if size == "sweep" then
    pktgen.range.pkt_size("0", "start", 64)
    pktgen.range.pkt_size("0", "inc", step)
    pktgen.range.pkt_size("0", "min", 64)
    pktgen.range.pkt_size("0", "max", 1518)
else
    local s = tonumber(size)
    if s < 64 or s > 1518 then error("CTGATE_SIZE must be 64..1518 or sweep") end
    pktgen.range.pkt_size("0", "start", s)
    pktgen.range.pkt_size("0", "inc", 0)
    pktgen.range.pkt_size("0", "min", s)
    pktgen.range.pkt_size("0", "max", s)
end
pktgen.set_range("0", "on")
pktgen.set("0", "rate", rate)
pktgen.page("range")

if seconds > 0 then
    pktgen.clr()
    pktgen.start("0")
    pktgen.delay(seconds * 1000)
    pktgen.stop("0")
    pktgen.delay(500)
    local s = pktgen.portStats("all", "port")
    local sent, got = s[0].opackets, s[1].ipackets
    printf("ctgate_range: sent %d, received back %d (%.3f%%) in %d s\n", sent, got, 100 * got / math.max(sent, 1), seconds)
else
    pktgen.start("0")
end
