#!/usr/bin/env bash
# Builds rdmig's two Debian packages from this workspace:
#   rdmig_VERSION-1_amd64.deb          (cargo-deb, crates/rdmig/Cargo.toml [package.metadata.deb])
#       /usr/bin/rdmig, the CRIU plugin /usr/lib/criu/librdmig_criu.so, the agent's unit
#       /usr/lib/systemd/system/rdmig-agent.service and its settings /etc/rdmig/agent.env
#   rdmig-rxe-dkms_VERSION-1_all.deb   (dpkg-deb)
#       softroce/ as DKMS source in /usr/src/rdmig-rxe-VERSION (our rdma_rxe and ib_uverbs)
#
#   packaging/build-deb.sh [--out DIR] [--install]
#
# --out DIR   where the packages go (default target/debian)
# --install   then install the rdmig package here with dpkg -i (not the DKMS package: it replaces
#             this machine's rdma_rxe and ib_uverbs for its 6.1 kernels; install it on the nodes)
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'build-deb: error: %s\n' "$*" >&2; exit 1; }
log() { printf 'build-deb: %s\n' "$*" >&2; }

out=target/debian
install=0
while [ $# -gt 0 ]; do
	case $1 in
	--out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift 2 ;;
	--install) install=1; shift ;;
	-h|--help) sed -n '2,13s/^# \{0,1\}//p' "$0"; exit 0 ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done

command -v cargo-deb >/dev/null 2>&1 || die "cargo-deb not found: cargo install cargo-deb --locked (scripts/setup.sh does)"
command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found: this builds Debian packages on Debian"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' crates/rdmig/Cargo.toml | head -n1)
dkms_version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' softroce/dkms.conf)
[ -n "$version" ] || die "cannot read rdmig's version from crates/rdmig/Cargo.toml"
[ "$version" = "$dkms_version" ] || die "rdmig is $version but softroce/dkms.conf says $dkms_version"
grep -q "^recommends = \"rdmig-rxe-dkms (= $version-1)\"" crates/rdmig/Cargo.toml ||
	die "crates/rdmig/Cargo.toml must recommend rdmig-rxe-dkms (= $version-1), the DKMS package made here"
mkdir -p "$out"

# rdmig: the binary and the plugin (another crate of the workspace, so built here, not by
# cargo-deb, which builds only the rdmig crate).
log "building rdmig and its CRIU plugin (release)"
cargo build --release --locked -p rdmig -p rdmig-criu-plugin
deb=$(cargo deb -p rdmig --no-build --output "$out" | tail -n1)
[ -f "$deb" ] || die "cargo deb did not report the package it made (got: $deb)"
log "made $deb"

# rdmig-rxe-dkms: the files dkms.conf and prepare-source.sh need, nothing generated.
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
src=$stage/usr/src/rdmig-rxe-$dkms_version
mkdir -p "$src" "$stage/DEBIAN" "$stage/usr/share/doc/rdmig-rxe-dkms"
cp softroce/dkms.conf softroce/prepare-source.sh softroce/lib.sh "$src/"
cp -R softroce/include softroce/patches softroce/uverbs "$src/"
cp softroce/README.md "$stage/usr/share/doc/rdmig-rxe-dkms/"
find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -type f -exec chmod 0644 {} +
chmod 0755 "$src/prepare-source.sh"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version-1/" -e "s/@SIZE@/$size/" packaging/dkms/control >"$stage/DEBIAN/control"
for s in postinst prerm; do
	sed "s/@DKMS_VERSION@/$dkms_version/" "packaging/dkms/$s" >"$stage/DEBIAN/$s"
	chmod 0755 "$stage/DEBIAN/$s"
done
dkms_deb=$out/rdmig-rxe-dkms_${version}-1_all.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$dkms_deb" >/dev/null
log "made $dkms_deb"

if [ "$install" = 1 ]; then
	log "installing $deb"
	dpkg -i "$deb" >/dev/null
	log "installed: $(dpkg-query -W -f='${Package} ${Version}' rdmig)"
fi
printf '%s\n%s\n' "$deb" "$dkms_deb"
