#!/bin/sh
# fuzz_sources.sh - builds the image libraries dae decodes with (Debian's
# own sources of libjpeg-turbo, giflib, libpng, zlib and libdeflate) as static
# libraries instrumented for fuzzing, so that `make fuzz` compiles every
# decoder's source into the fuzzers instead of linking the prebuilt,
# uninstrumented shared libraries.
#
#   tools/fuzz_sources.sh [OUTDIR]          (default build/fuzz; as root)
#
# As root it adds a "deb-src" twin of each apt source that has none,
# runs apt-get update, installs the tools (clang, its sanitizer runtimes,
# cmake, dpkg-dev) and runs `apt-get source` into OUTDIR/src. It then
# builds each library twice with clang:
#   OUTDIR/asan/{include,lib}   -fsanitize=address,undefined
#   OUTDIR/msan/{include,lib}   -fsanitize=memory (origins tracked)
# A second run reuses what is there (delete OUTDIR/src to start afresh).
# Nothing here is committed: OUTDIR lives under build/.
set -eu

OUT=${1:-build/fuzz}
SRC=$OUT/src
PACKAGES="libjpeg-turbo giflib libpng1.6 zlib libdeflate"
JOBS=$(nproc 2>/dev/null || echo 2)
# What a finished build holds: an older build without one of them is redone.
LIBRARIES="libz libdeflate libpng libgif libjpeg"

log() { echo "fuzz_sources: $*"; }

# ---------------------------------------------------------------- sources

have_sources() {
    for p in jpeg giflib libpng zlib libdeflate; do
        ls -d "$SRC"/*"$p"*/ >/dev/null 2>&1 || return 1
    done
}

# Adds "Types: deb-src" twins of the deb822 sources and "deb-src" lines
# for a classic sources.list, unless source entries exist already.
add_deb_src() {
    if grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        return 0
    fi
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        twin=/etc/apt/sources.list.d/$(basename "$f" .sources)-src.sources
        log "adding $twin"
        sed 's/^Types:.*/Types: deb-src/' "$f" >"$twin"
    done
    if [ -f /etc/apt/sources.list ] && grep -qE '^deb ' /etc/apt/sources.list; then
        log "adding /etc/apt/sources.list.d/dae-src.list"
        sed -n 's/^deb /deb-src /p' /etc/apt/sources.list >/etc/apt/sources.list.d/dae-src.list
    fi
}

if ! have_sources; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "fuzz_sources: run as root (it adds deb-src entries and installs clang, cmake, dpkg-dev)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    add_deb_src
    apt-get update -q
    apt-get install -y --no-install-recommends clang libclang-rt-14-dev cmake dpkg-dev
    mkdir -p "$SRC"
    for p in $PACKAGES; do
        ls -d "$SRC/$p"-*/ >/dev/null 2>&1 && continue # fetched by an earlier run
        # The newest version first; a mirror may lack one (a security
        # update not yet there), so older ones are tried in turn.
        (cd "$SRC" && apt-get source -q "$p") && continue
        ok=""
        for v in $(apt-cache showsrc "$p" | sed -n 's/^Version: //p' | sort -rV); do
            (cd "$SRC" && apt-get source -q "$p=$v") && { ok=1; break; }
        done
        [ -n "$ok" ] || { echo "fuzz_sources: cannot fetch the source of $p" >&2; exit 1; }
    done
fi

dir_of() { ls -d "$SRC"/$1*/ | head -1 | sed 's:/$::'; }
JPEG_SRC=$(dir_of libjpeg-turbo-)
GIF_SRC=$(dir_of giflib-)
PNG_SRC=$(dir_of libpng1.6-)
ZLIB_SRC=$(dir_of zlib-)
DEFLATE_SRC=$(dir_of libdeflate-)
log "sources: $JPEG_SRC $GIF_SRC $PNG_SRC $ZLIB_SRC $DEFLATE_SRC"

# ---------------------------------------------------------------- builds

# Compiles the listed .c files of a library into PREFIX/lib/NAME.a, JOBS
# at a time (the paths have no blanks: they are build/ and the packages').
# Usage: build_plain NAME SRCDIR CFLAGS FILE...
build_plain() {
    name=$1 dir=$2 flags=$3
    shift 3
    obj=$PREFIX/obj/$name
    mkdir -p "$obj" "$PREFIX/lib"
    for f in "$@"; do
        echo "clang $flags -c $dir/$f -o $obj/$(basename "$f" .c).o"
    done | xargs -d '\n' -n 1 -P "$JOBS" sh -c
    rm -f "$PREFIX/lib/$name.a"
    ar rcs "$PREFIX/lib/$name.a" "$obj"/*.o
}

# Builds the five libraries with sanitizer flags SAN into PREFIX.
build_variant() {
    PREFIX=$1 SAN=$2
    if [ -f "$PREFIX/.done" ] && [ "$(cat "$PREFIX/.done")" = "$SAN fuzzer-no-link $LIBRARIES" ]; then
        log "$PREFIX is up to date"
        return 0
    fi
    log "building into $PREFIX ($SAN)"
    # fuzzer-no-link: coverage instrumentation, so libFuzzer sees inside.
    CF="-g -O1 -fno-omit-frame-pointer -fPIC -fsanitize=fuzzer-no-link $SAN"
    rm -rf "$PREFIX"
    mkdir -p "$PREFIX/include" "$PREFIX/lib"

    # zlib: its own Makefile's list of library sources.
    build_plain libz "$ZLIB_SRC" "$CF -DHAVE_UNISTD_H -DHAVE_STDARG_H" \
        adler32.c crc32.c deflate.c infback.c inffast.c inflate.c inftrees.c trees.c zutil.c \
        compress.c uncompr.c gzclose.c gzlib.c gzread.c gzwrite.c
    cp "$ZLIB_SRC/zlib.h" "$ZLIB_SRC/zconf.h" "$PREFIX/include/"

    # libdeflate: its Makefile's library sources (the x86 code picks its
    # SIMD at run time, as the packaged library does).
    build_plain libdeflate "$DEFLATE_SRC" "$CF -I$DEFLATE_SRC" \
        lib/adler32.c lib/crc32.c lib/deflate_compress.c lib/deflate_decompress.c lib/gzip_compress.c \
        lib/gzip_decompress.c lib/utils.c lib/zlib_compress.c lib/zlib_decompress.c lib/x86/cpu_features.c
    cp "$DEFLATE_SRC/libdeflate.h" "$PREFIX/include/"

    # libpng: the library sources with the prebuilt configuration (no
    # SIMD code: PNG_INTEL_SSE and PNG_ARM_NEON stay undefined).
    cp "$PNG_SRC/scripts/pnglibconf.h.prebuilt" "$PREFIX/include/pnglibconf.h"
    cp "$PNG_SRC/png.h" "$PNG_SRC/pngconf.h" "$PREFIX/include/"
    build_plain libpng "$PNG_SRC" "$CF -I$PREFIX/include -DPNG_ARM_NEON_OPT=0 -DPNG_INTEL_SSE_OPT=0" \
        png.c pngerror.c pngget.c pngmem.c pngpread.c pngread.c pngrio.c pngrtran.c pngrutil.c \
        pngset.c pngtrans.c pngwio.c pngwrite.c pngwtran.c pngwutil.c

    # giflib: the library part of its Makefile.
    build_plain libgif "$GIF_SRC" "$CF" \
        dgif_lib.c egif_lib.c gifalloc.c gif_err.c gif_font.c gif_hash.c openbsd-reallocarray.c
    cp "$GIF_SRC/gif_lib.h" "$PREFIX/include/"

    # libjpeg-turbo: cmake, static only, no SIMD (assembly is not
    # instrumented), only the library target.
    bdir=$PREFIX/obj/jpeg
    mkdir -p "$bdir"
    cmake -S "$JPEG_SRC" -B "$bdir" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=None \
        -DCMAKE_C_FLAGS="$CF" -DENABLE_SHARED=0 -DENABLE_STATIC=1 -DWITH_SIMD=0 -DWITH_TURBOJPEG=0 \
        -DREQUIRE_SIMD=0 >"$bdir/cmake.log" 2>&1 || { cat "$bdir/cmake.log"; exit 1; }
    make -C "$bdir" -j"$JOBS" jpeg-static >"$bdir/make.log" 2>&1 || { tail -30 "$bdir/make.log"; exit 1; }
    cp "$bdir/libjpeg.a" "$PREFIX/lib/"
    cp "$JPEG_SRC/jpeglib.h" "$JPEG_SRC/jmorecfg.h" "$JPEG_SRC/jerror.h" "$bdir/jconfig.h" "$PREFIX/include/"

    echo "$SAN fuzzer-no-link $LIBRARIES" >"$PREFIX/.done"
}

build_variant "$OUT/asan" "-fsanitize=address,undefined"
build_variant "$OUT/msan" "-fsanitize=memory -fsanitize-memory-track-origins"
log "done: $OUT/asan and $OUT/msan"
