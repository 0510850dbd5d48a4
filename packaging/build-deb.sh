#!/usr/bin/env bash
# Builds rdmig's two Debian packages from this workspace with dpkg-deb:
#   rdmig_VERSION-1_amd64.deb          packaging/rdmig/ (control, files, maintainer scripts)
#       /usr/bin/rdmig, the CRIU plugin /usr/lib/criu/librdmig_criu.so and its pre-setup helper
#       /usr/lib/rdmig/rdmig-presetup, the agent's unit
#       /usr/lib/systemd/system/rdmig-agent.service and its settings /etc/rdmig/agent.env,
#       a man page per command in /usr/share/man/man1 (rdmig manpages writes them)
#   rdmig-rxe-dkms_VERSION-1_all.deb   packaging/rdmig-rxe-dkms/
#       softroce/ as DKMS source in /usr/src/rdmig-rxe-VERSION (our rdma_rxe, ib_uverbs and RDMA CM)
#
#   packaging/build-deb.sh [--profile release|dev] [--out DIR] [--install]
#
# --profile release  (default) cargo build --release of rdmig and its plugin, then package them:
#                    what a site installs
# --profile dev      package target/debug as the workspace build left it (cargo build --workspace
#                    --all-targets, as scripts/test.sh runs it); builds nothing
# --out DIR          where the packages go (default target/debian)
# --install          then install the rdmig package here with dpkg -i (not the DKMS package: it
#                    replaces this machine's rdma_rxe, ib_uverbs and RDMA CM for its 6.1 kernels)
set -euo pipefail
shopt -s inherit_errexit # a failure inside $(build ...) stops the script too
cd "$(dirname "$0")/.."

die() { printf 'build-deb: error: %s\n' "$*" >&2; exit 1; }
log() { printf 'build-deb: %s\n' "$*" >&2; }

profile=release
out=target/debian
install=0
while [ $# -gt 0 ]; do
	case $1 in
	--profile) [ $# -ge 2 ] || die "--profile needs release or dev"; profile=$2; shift 2 ;;
	--out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift 2 ;;
	--install) install=1; shift ;;
	-h|--help) sed -n '2,17s/^# \{0,1\}//p' "$0"; exit 0 ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done
case $profile in
release | dev) ;;
*) die "--profile must be release or dev, not '$profile'" ;;
esac
for tool in dpkg-deb dpkg-shlibdeps strip; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool not found (Debian: apt-get install dpkg-dev binutils)"
done

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' crates/rdmig/Cargo.toml | head -n1)
dkms_version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' softroce/dkms.conf)
[ -n "$version" ] || die "cannot read rdmig's version from crates/rdmig/Cargo.toml"
[ "$version" = "$dkms_version" ] || die "rdmig is $version but softroce/dkms.conf says $dkms_version"
changelog_version=$(sed -n '1s/^rdmig (\([^)]*\)).*/\1/p' packaging/changelog)
[ "$changelog_version" = "$version-1" ] || die "packaging/changelog's first entry is $changelog_version, the packages are $version-1 (add an entry)"
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target_dir" ] || die "cannot find cargo's target directory (cargo metadata)"

if [ "$profile" = release ]; then
	# The plugin is another crate of the workspace: both built here.
	log "building rdmig and its CRIU plugin (release)"
	cargo build --release --locked -p rdmig -p rdmig-criu-plugin
	bin=$target_dir/release
else
	bin=$target_dir/debug
	for f in rdmig librdmig_criu.so rdmig-presetup; do
		[ -f "$bin/$f" ] || die "$bin/$f is missing: --profile dev packages the workspace's build (cargo build --workspace --all-targets --locked)"
	done
fi
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Puts package $1's files (packaging/$1/files) under $work/debian/$1, as its file list says.
stage() {
	local pkg=$1 root=$work/debian/$1 src dest mode flags f
	: >"$work/$pkg.conffiles"
	while read -r src dest mode flags; do
		case $src in '' | '#'*) continue ;; esac
		src=${src//@TARGET@/$bin}
		dest=${dest//@VERSION@/$version}
		[ -n "$mode" ] && [[ $dest == /* ]] || die "packaging/$pkg/files: a line needs SOURCE /DESTINATION MODE: $src $dest $mode"
		[ -e "$src" ] || die "packaging/$pkg/files names $src, which does not exist"
		if [ -d "$src" ]; then
			mkdir -p "$root$dest"
			cp -R "$src/." "$root$dest/"
			find "$root$dest" -type f -exec chmod "$mode" {} +
		else
			install -D -m "$mode" "$src" "$root$dest"
		fi
		for f in $flags; do
			case $f in
			# dh_strip: comments and notes out, and for shared libraries the symbols nothing links to
			strip)
				if [[ $dest == *.so ]]; then
					strip --remove-section=.comment --remove-section=.note --strip-unneeded "$root$dest"
				else
					strip --remove-section=.comment --remove-section=.note "$root$dest"
				fi
				;;
			conffile) echo "$dest" >>"$work/$pkg.conffiles" ;;
			gzip)
				[[ $dest == *.gz ]] || die "packaging/$pkg/files: $dest must end in .gz (flag gzip)"
				gzip -9n <"$src" >"$root$dest"
				;;
			*) die "packaging/$pkg/files: unknown flag '$f' for $src" ;;
			esac
		done
	done <"packaging/$pkg/files"
	find "$root" -type d -exec chmod 0755 {} +
	mkdir -p "$root/DEBIAN"
}

# Makes package $1 from its staged files, control file (@VERSION@, @INSTALLED_SIZE@, @SHLIBS@
# filled in) and maintainer scripts; prints the .deb's path.
build() {
	local pkg=$1 arch=$2 shlibs=$3 root=$work/debian/$1 s size deb
	size=$(du -sk --apparent-size --exclude=DEBIAN "$root" | cut -f1)
	sed -e "s/@VERSION@/$version/g" -e "s/@INSTALLED_SIZE@/$size/" -e "s/@SHLIBS@/$shlibs/" "packaging/$pkg/control" >"$root/DEBIAN/control"
	for s in postinst prerm postrm; do
		if [ -f "packaging/$pkg/$s" ]; then
			sed "s/@VERSION@/$version/g" "packaging/$pkg/$s" >"$root/DEBIAN/$s"
			chmod 0755 "$root/DEBIAN/$s"
		fi
	done
	if [ -s "$work/$pkg.conffiles" ]; then
		install -m 0644 "$work/$pkg.conffiles" "$root/DEBIAN/conffiles"
	fi
	# md5sums of everything but the conffiles (dpkg tracks those itself), as dh_md5sums
	(cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\n' | LC_ALL=C sort |
		grep -vxF -f <(sed 's|^/||' "$work/$pkg.conffiles"; echo DEBIAN) | xargs -r -d '\n' md5sum) >"$root/DEBIAN/md5sums"
	deb=$out/${pkg}_${version}-1_$arch.deb
	dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
	# A package dpkg cannot read, or one that lost a file of its list, never leaves here.
	dpkg-deb --info "$deb" >/dev/null || die "dpkg-deb --info cannot read $deb"
	contents=$(dpkg-deb --contents "$deb" | awk '{print $NF}' | sed 's|^\./|/|')
	(cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '/%P\n') | while read -r f; do
		grep -qxF "$f" <<<"$contents" || die "$deb lacks $f"
	done
	echo "$deb"
}

log "packaging rdmig ($profile build in $bin)"
stage rdmig
# A man page per command (rdmig.1, rdmig-migrate.1, ...), written by the binary being packaged
# from the definitions its --help prints.
"$bin/rdmig" manpages "$work/man" >/dev/null || die "$bin/rdmig manpages failed"
mkdir -p "$work/debian/rdmig/usr/share/man/man1"
for page in "$work/man"/*.1; do
	gzip -9n <"$page" >"$work/debian/rdmig/usr/share/man/man1/${page##*/}.gz"
	chmod 0644 "$work/debian/rdmig/usr/share/man/man1/${page##*/}.gz"
done
[ -f "$work/debian/rdmig/usr/share/man/man1/rdmig-migrate.1.gz" ] || die "rdmig manpages wrote no rdmig-migrate.1"
find "$work/debian/rdmig" -type d -exec chmod 0755 {} +
# The libraries the binaries link (libc6, libgcc-s1), with the versions their symbols need:
# dpkg-shlibdeps, run as in a source package (debian/control, the files under debian/rdmig).
printf 'Source: rdmig\n\nPackage: rdmig\nArchitecture: amd64\n' >"$work/debian/control"
shlibs=$(cd "$work" && dpkg-shlibdeps -O debian/rdmig/usr/bin/rdmig debian/rdmig/usr/lib/criu/librdmig_criu.so debian/rdmig/usr/lib/rdmig/rdmig-presetup | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || die "dpkg-shlibdeps found no library dependencies of rdmig"
deb=$(build rdmig amd64 "$shlibs")
log "made $deb"

log "packaging rdmig-rxe-dkms"
stage rdmig-rxe-dkms
dkms_deb=$(build rdmig-rxe-dkms all "")
log "made $dkms_deb"

if [ "$install" = 1 ]; then
	log "installing $deb"
	dpkg -i "$deb" >/dev/null
	log "installed: $(dpkg-query -W -f='${Package} ${Version}' rdmig)"
fi
printf '%s\n%s\n' "$deb" "$dkms_deb"
