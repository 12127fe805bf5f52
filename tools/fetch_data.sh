#!/bin/sh
# fetch_data.sh - download the official MNIST and Fashion-MNIST IDX files
# into the data directory (`make data`), verifying each against its
# published MD5.
#
# usage: tools/fetch_data.sh [--dir DIR] [--dataset mnist|fashion-mnist|all] [--force]
#
# DIR defaults to $DAE_DATA_DIR. Files land where dae looks for them:
#   DIR/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
#   DIR/fashion-mnist/...
# A file already there with the official checksum is kept. One with
# another checksum that is still a valid gzip file (a recompressed copy)
# is kept with a warning, unless --force; a broken one is replaced.
#
# Each download goes to a temporary file in DIR, is checked (MD5, then
# gzip integrity) and only then renamed into place, so a failed or
# interrupted run never leaves a partial file. Sources are tried in turn;
# a host that does not answer within the connect timeout (10 s) is given
# up, so without a network the script fails within seconds.
#
# Checksums: the MD5s that the data sets' authors publish for their .gz
# files (Fashion-MNIST's README; for MNIST the long-standing values of the
# original files from yann.lecun.com, which torchvision also checks). No
# SHA-256 is published for them, so none is invented here; the script
# prints the SHA-256 of each file it verifies, for your records.
#
# Settings: DAE_MNIST_URLS and DAE_FASHION_MNIST_URLS (space-separated
# base URLs, tried in order) replace the default sources;
# DAE_FETCH_CONNECT_TIMEOUT (s, default 10) and DAE_FETCH_MAX_TIME (s per
# file, default 600). Needs curl (or wget), md5sum, gzip.
# Exit status: 0 when every file is in place, 1 on a failure, 2 usage.
set -eu

usage() {
    echo "usage: $0 [--dir DIR] [--dataset mnist|fashion-mnist|all] [--force]" >&2
    exit 2
}

dir=${DAE_DATA_DIR:-}
which=all
force=no
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) [ $# -ge 2 ] || usage; dir=$2; shift 2 ;;
        --dir=*) dir=${1#--dir=}; shift ;;
        --dataset) [ $# -ge 2 ] || usage; which=$2; shift 2 ;;
        --dataset=*) which=${1#--dataset=}; shift ;;
        --force) force=yes; shift ;;
        -h | --help)
            sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'
            exit 0 ;;
        *) echo "fetch_data: unknown argument \"$1\"" >&2; usage ;;
    esac
done
case "$which" in
    mnist | fashion-mnist | all) ;;
    *) echo "fetch_data: --dataset must be mnist, fashion-mnist or all, not \"$which\"" >&2; exit 2 ;;
esac
if [ -z "$dir" ]; then
    echo "fetch_data: no data directory: set DAE_DATA_DIR or pass --dir DIR" >&2
    exit 2
fi

connect_timeout=${DAE_FETCH_CONNECT_TIMEOUT:-10}
max_time=${DAE_FETCH_MAX_TIME:-600}
mnist_urls=${DAE_MNIST_URLS:-"https://ossci-datasets.s3.amazonaws.com/mnist http://yann.lecun.com/exdb/mnist"}
fashion_urls=${DAE_FASHION_MNIST_URLS:-"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"}

# fetch URL FILE: 0 when downloaded, 1 for an HTTP or other error, 3 when
# the host could not be reached at all (name lookup, connect, time-out).
if command -v curl >/dev/null 2>&1; then
    fetch() {
        rc=0
        curl -fsSL --connect-timeout "$connect_timeout" --max-time "$max_time" -o "$2" "$1" || rc=$?
        case $rc in 0) return 0 ;; 5 | 6 | 7 | 28) return 3 ;; *) return 1 ;; esac
    }
elif command -v wget >/dev/null 2>&1; then
    fetch() {
        rc=0
        wget -q --connect-timeout="$connect_timeout" --timeout="$max_time" --tries=1 -O "$2" "$1" || rc=$?
        case $rc in 0) return 0 ;; 4) return 3 ;; *) return 1 ;; esac
    }
else
    echo "fetch_data: needs curl or wget (apt-get install curl)" >&2
    exit 1
fi
for tool in md5sum sha256sum gzip; do
    command -v "$tool" >/dev/null 2>&1 || { echo "fetch_data: needs $tool" >&2; exit 1; }
done

# The temporary file being downloaded, removed on any exit or signal.
part=""
trap '[ -z "$part" ] || rm -f "$part"' EXIT
trap 'exit 1' INT TERM HUP

failed=0
unreachable=" "   # base URLs whose host did not answer: not tried again
made=""           # data set directories this run created

# get SET FILE MD5 URLS: makes DIR/SET/FILE hold the official file.
get() {
    set_name=$1 file=$2 md5=$3 urls=$4
    dest=$dir/$set_name/$file
    if [ -f "$dest" ]; then
        have=$(md5sum < "$dest" | cut -d' ' -f1)
        if [ "$have" = "$md5" ]; then
            echo "fetch_data: $dest: present, MD5 ok"
            return 0
        fi
        if [ "$force" = no ] && gzip -t "$dest" 2>/dev/null; then
            echo "fetch_data: warning: $dest: present with MD5 $have, not the official $md5;" \
                 "kept (a recompressed copy?); --force replaces it" >&2
            return 0
        fi
    fi
    if [ ! -d "$dir/$set_name" ]; then
        mkdir -p "$dir/$set_name"
        made="$made $dir/$set_name"
    fi
    for base in $urls; do
        case "$unreachable" in *" $base "*) continue ;; esac
        part=$dest.part.$$
        rm -f "$part"
        echo "fetch_data: $base/$file"
        frc=0
        fetch "$base/$file" "$part" || frc=$?
        if [ "$frc" -eq 3 ]; then
            echo "fetch_data: $base: host unreachable (offline?): not tried again" >&2
            unreachable="$unreachable$base "
            rm -f "$part"; part=""
            continue
        elif [ "$frc" -ne 0 ]; then
            echo "fetch_data: $base/$file: download failed" >&2
            rm -f "$part"; part=""
            continue
        fi
        have=$(md5sum < "$part" | cut -d' ' -f1)
        if [ "$have" != "$md5" ]; then
            echo "fetch_data: $base/$file: MD5 $have, expected $md5: discarded" >&2
            rm -f "$part"; part=""
            continue
        fi
        if ! gzip -t "$part" 2>/dev/null; then
            echo "fetch_data: $base/$file: not a valid gzip file: discarded" >&2
            rm -f "$part"; part=""
            continue
        fi
        mv -f "$part" "$dest"
        part=""
        echo "fetch_data: $dest: MD5 ok, SHA-256 $(sha256sum < "$dest" | cut -d' ' -f1)"
        return 0
    done
    echo "fetch_data: FAILED: $dest: no source gave the official file (sources: $urls)" >&2
    failed=$((failed + 1))
    return 0
}

if [ "$which" = mnist ] || [ "$which" = all ]; then
    get mnist train-images-idx3-ubyte.gz f68b3c2dcbeaaa9fbdd348bbdeb94873 "$mnist_urls"
    get mnist train-labels-idx1-ubyte.gz d53e105ee54ea40749a09fcbcd1e9432 "$mnist_urls"
    get mnist t10k-images-idx3-ubyte.gz 9fb629c4189551a2d022fa330f9573f3 "$mnist_urls"
    get mnist t10k-labels-idx1-ubyte.gz ec29112dd5afa0611ce80d1b7f02629c "$mnist_urls"
fi
if [ "$which" = fashion-mnist ] || [ "$which" = all ]; then
    get fashion-mnist train-images-idx3-ubyte.gz 8d4fb7e6c68d591d4c3dfef9ec88bf0d "$fashion_urls"
    get fashion-mnist train-labels-idx1-ubyte.gz 25c81989df183df01b3e8a0aad5dffbe "$fashion_urls"
    get fashion-mnist t10k-images-idx3-ubyte.gz bef4ecab320f06d8554ea6380940ec79 "$fashion_urls"
    get fashion-mnist t10k-labels-idx1-ubyte.gz bb300cfdad3c16e7a12a480ee83cd310 "$fashion_urls"
fi

if [ "$failed" -gt 0 ]; then
    for d in $made; do rmdir "$d" 2>/dev/null || true; done
    echo "fetch_data: $failed file(s) missing in $dir: check the network connection and run again" >&2
    exit 1
fi
echo "fetch_data: $dir is complete"
