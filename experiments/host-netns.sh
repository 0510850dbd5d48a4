# shellcheck shell=bash
# Sourced by the host benchmarks (host-tls-vs-iperf3.sh, host-tls-ab.sh): two network
# namespaces joined by a veth pair on this machine's own CPU, the TLS identities of their two
# nodes, and a wait for a listener.

# netns_pair NS_A DEV_A IP_A NS_B DEV_B IP_B: the namespaces (leftovers of a killed run
# removed first: the caller holds its lock, so no other run uses these names), a veth pair
# DEV_A-DEV_B between them with IP_A/24 and IP_B/24, checked with one ping.
netns_pair() {
	local na=$1 da=$2 ia=$3 nb=$4 db=$5 ib=$6 ns
	netns_del "$na" "$nb"
	ip netns add "$na"
	ip netns add "$nb"
	ip -n "$na" link add "$da" type veth peer name "$db" netns "$nb"
	ip -n "$na" addr add "$ia/24" dev "$da"
	ip -n "$nb" addr add "$ib/24" dev "$db"
	for ns in "$na" "$nb"; do ip -n "$ns" link set lo up; done
	ip -n "$na" link set "$da" up
	ip -n "$nb" link set "$db" up
	ip netns exec "$na" ping -c 1 -W 5 "$ib" >/dev/null
}

# netns_del NS...: removes the namespaces (a veth pair goes with its namespace).
netns_del() {
	local ns
	for ns in "$@"; do ip netns del "$ns" 2>/dev/null || true; done
}

# node_tls RDMIG DIR IP_A IP_B: a cluster CA in DIR/ca and the TLS directories DIR/hb-a and
# DIR/hb-b of nodes hb-a (IP_A, the sender) and hb-b (IP_B, the agent).
node_tls() {
	"$1" ca init "$2/ca" >/dev/null
	"$1" ca issue hb-a --dir "$2/ca" --ip "$3" --out "$2/hb-a" >/dev/null
	"$1" ca issue hb-b --dir "$2/ca" --ip "$4" --out "$2/hb-b" >/dev/null
}

# listening NETNS PORT: waits (10 s at most) until something listens on TCP PORT in NETNS.
listening() {
	local _
	for _ in $(seq 100); do
		[ -n "$(ip netns exec "$1" ss -Hltn "sport = :$2")" ] && return 0
		sleep 0.1
	done
	return 1
}
