-- pktgen-DPDK: IMIX (64 / 594 / 1518 bytes at 7:4:1) over many flows, from a
-- capture: pktgen replays a pcap given with -s in a loop, so the flows and
-- the size mix come from scripts/bench_frames.py (--imix). Port 0 -> ctgate
-- inside, ctgate outside -> port 1. See scripts/pktgen/README.md.
--
--   python3 scripts/bench_frames.py imix.pcap 02:00:00:00:00:01 100000 --imix
--   pktgen -l 0-2 -n 4 -a 0000:01:00.0 -a 0000:01:00.1 -- -P -m "[1].0,[2].1" \
--     -s 0:imix.pcap -f scripts/pktgen/ctgate_imix.lua
package.path = package.path .. ";?.lua;test/?.lua;app/?.lua;"
require "Pktgen"

local rate = tonumber(os.getenv("CTGATE_RATE") or "100")
local seconds = tonumber(os.getenv("CTGATE_SECONDS") or "10")

pktgen.stop("all")
pktgen.set("0", "rate", rate)
pktgen.clr()
pktgen.start("0")
pktgen.delay(seconds * 1000)
pktgen.stop("0")
pktgen.delay(500)
local s = pktgen.portStats("all", "port")
local sent, got = s[0].opackets, s[1].ipackets
printf("ctgate_imix: sent %d, received back %d (%.3f%%) in %d s\n", sent, got, 100 * got / math.max(sent, 1), seconds)
