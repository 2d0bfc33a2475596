#!/usr/bin/perl
# The ELF inspector's verdicts, through build/ffi-elf-check, on files built
# right here: good and pinned libraries, broken, foreign and executable ones.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Copy qw(copy);
use File::Temp qw(tempdir);
use Test::More;

my $root = abs_path(dirname(abs_path(__FILE__)) . '/..');
my $check = "$root/build/ffi-elf-check";
my $dir = tempdir('ffi-elf-check-XXXXXX', TMPDIR => 1, CLEANUP => 1);

# the tool is tiny: make sure it is current rather than trust a stale build
run('make', '-s', '-C', $root, '-f', 'manager/elf.mk', 'build/ffi-elf-check');

my %machine_names = (
    3 => 'Intel 80386', 8 => 'MIPS', 20 => 'PowerPC', 21 => 'PowerPC64',
    22 => 'IBM S/390', 40 => 'ARM', 62 => 'x86-64', 183 => 'AArch64',
    243 => 'RISC-V', 258 => 'LoongArch',
);

my $init = 'int libffi_init(char *cfg, void *tq) { return !cfg && !tq; }';

write_file('good.c', "$init\n");
write_file('noinit.c', "int other_init(void) { return 0; }\n");
write_file('object.c', "int libffi_init = 1;\n");
write_file('undef.c', "extern int libffi_init(char *, void *);\n"
                      . "int call(void) { return libffi_init(0, 0); }\n");
write_file('weak.c', "__attribute__((weak)) $init\n");
write_file('gosym.c', "$init\nconst char go_version[]"
                      . " __asm__(\"runtime.buildVersion\") = \"go1.19\";\n");
write_file('main.c', "int main(void) { return 0; }\n");
write_file('stub.c', "void stub_runtime_entry(void) {}\n");
write_file('text.txt', "hello, this is not a library\n");
write_file('empty.so', '');
write_file('buildinfo', "\xff Go buildinf:go1.19");

so('good.so', 'good.c', '-Wl,--build-id=sha1');
so('md5.so', 'good.c', '-Wl,--build-id=md5');
so('nobuildid.so', 'good.c', '-Wl,--build-id=none');
so('noinit.so', 'noinit.c');
so('object.so', 'object.c');
so('undef.so', 'undef.c');
so('weak.so', 'weak.c');
so('gosym.so', 'gosym.c');

# stand-ins for the real runtimes: only their DT_SONAME matters here
mkdir "$dir/rt" or die "mkdir: $!";
so('rt/libjvm.so', 'stub.c');
so('rt/libnode.so', 'stub.c', '-Wl,-soname,libnode.so.108');
so('rt/libpython3.11.so', 'stub.c', '-Wl,-soname,libpython3.11.so.1.0');
so('jvm.so', 'good.c', "-L$dir/rt", '-Wl,--no-as-needed', '-ljvm');
so('node.so', 'good.c', "-L$dir/rt", '-Wl,--no-as-needed', '-lnode');
so('python.so', 'good.c', "-L$dir/rt", '-Wl,--no-as-needed',
   '-lpython3.11');

run('gcc', '-o', "$dir/pie", '-fPIE', '-pie', "$dir/main.c");
run('gcc', '-o', "$dir/nopie", '-fno-PIE', '-no-pie', "$dir/main.c");
run('gcc', '-o', "$dir/static-pie", '-static-pie', "$dir/main.c");
run('gcc', '-c', '-fPIC', '-o', "$dir/good.o", "$dir/good.c");

run('objcopy', '--add-section', ".go.buildinfo=$dir/buildinfo",
    "$dir/good.so", "$dir/gobuildinfo.so");
run('objcopy', '--add-section', ".go.buildinfo=$dir/buildinfo",
    "$dir/jvm.so", "$dir/gojvm.so");

my $good = slurp('good.so');
my $len = length $good;
my $elf = elf_layout($good);
my $bid = build_id('good.so');

like($bid, qr/^[0-9a-f]{40}$/, 'readelf -n shows a sha1 build-id');


# --- libraries that may be loaded

verdict('good.so', "ok build-id=$bid pin=none", 'good library');
verdict('md5.so', 'ok build-id=' . build_id('md5.so') . ' pin=none',
        '16-byte build-id');
is(length build_id('md5.so'), 32, 'readelf -n shows a md5 build-id');
verdict('nobuildid.so', 'ok build-id=none pin=none', 'no build-id');
verdict('weak.so', 'ok build-id=' . build_id('weak.so') . ' pin=none',
        'weak libffi_init');


# --- libraries that may be loaded but never unloaded

verdict('gobuildinfo.so', "ok build-id=$bid pin=go",
        '.go.buildinfo added by objcopy pins, build-id kept');
verdict('gosym.so', 'ok build-id=' . build_id('gosym.so') . ' pin=go',
        'runtime.buildVersion symbol pins');
verdict('jvm.so', 'ok build-id=' . build_id('jvm.so') . ' pin=jvm',
        'DT_NEEDED libjvm.so pins');
verdict('node.so', 'ok build-id=' . build_id('node.so') . ' pin=node',
        'DT_NEEDED libnode.so.108 pins');
verdict('python.so', 'ok build-id=' . build_id('python.so') . ' pin=python',
        'DT_NEEDED libpython3.11.so.1.0 pins');
verdict('gojvm.so', 'ok build-id=' . build_id('jvm.so') . ' pin=go',
        'Go wins over the JVM');

SKIP: {
    skip 'no Go toolchain (golang-go) to build a c-shared library', 1
        unless grep { -x "$_/go" } split /:/, $ENV{PATH};

    write_file('golib.go', "package main\n\nimport \"C\"\n\n"
               . "//export libffi_init\n"
               . "func libffi_init(cfg *C.char, tq *C.void) C.int "
               . "{ return 0 }\n\nfunc main() {}\n");

    my %goenv = (GO111MODULE => 'off', GOFLAGS => '');

    # go needs somewhere to cache; a throw-away one only when there is none
    $goenv{GOCACHE} = "$dir/gocache"
        unless grep { defined $ENV{$_} } qw(GOCACHE HOME XDG_CACHE_HOME);

    local @ENV{keys %goenv} = values %goenv;
    run('go', 'build', '-buildmode=c-shared', '-o', "$dir/golib.so",
        "$dir/golib.go");

    verdict('golib.so', 'ok build-id=' . build_id('golib.so') . ' pin=go',
            'real Go c-shared library pins');
}


# --- refused: not a library at all

verdict('empty.so',
        'refused: is empty (0 bytes), expected an ELF shared library',
        'empty file');
verdict('text.txt', 'refused: not an ELF file: it starts with bytes '
        . '68 65 6c 6c, expected 7f 45 4c 46 ("\177ELF")', 'text file');
verdict('good.o', 'refused: is not a shared library: e_type 1 '
        . 'ET_REL (relocatable object), expected ET_DYN (shared object)',
        'relocatable object');
verdict('nopie', 'refused: is an executable, not a shared library: '
        . 'e_type ET_EXEC, expected ET_DYN', 'non-PIE executable');
verdict('pie', 'refused: is an executable, not a shared library: '
        . 'it names a program interpreter (PT_INTERP)', 'PIE executable');
verdict('static-pie', 'refused: is an executable, not a shared library: '
        . 'DT_FLAGS_1 has DF_1_PIE set', 'static PIE: DF_1_PIE only');


# --- refused: built for another machine

my $native = $elf->{machine};
my $foreign = $native == 183 ? 62 : 183;

ok(exists $machine_names{$native}, "name of this machine ($native) known");

write_file('arch.so', patch($good, 18, pack('S', $foreign)));
verdict('arch.so', "refused: is built for another architecture: "
        . "e_machine $foreign ($machine_names{$foreign}), expected "
        . "$native ($machine_names{$native}) for this machine",
        'e_machine of another architecture');

my ($other_bits, $bits) = $elf->{class} == 2 ? (32, 64) : (64, 32);
my $other_class = $elf->{class} == 2 ? 1 : 2;

write_file('class.so', patch($good, 4, chr $other_class));
verdict('class.so', "refused: is a $other_bits-bit ELF file "
        . "(EI_CLASS $other_class), expected $bits-bit "
        . "(ELFCLASS$bits) for this machine", 'other ELF class');

my $le = unpack('C', substr($good, 5, 1)) == 1;

write_file('data.so', patch($good, 5, chr($le ? 2 : 1)));
verdict('data.so', 'refused: is a ' . ($le ? 'big' : 'little')
        . '-endian ELF file (EI_DATA ' . ($le ? 2 : 1) . '), expected '
        . ($le ? 'little-endian (ELFDATA2LSB)' : 'big-endian (ELFDATA2MSB)')
        . ' for this machine', 'other byte order');


# --- refused: truncated or forged

my $half = int($len / 2);
my $shdr_end = $elf->{shoff} + $elf->{shnum} * $elf->{shentsize};

ok($elf->{shoff} > $half, 'section headers are in the second half');

copy("$dir/good.so", "$dir/half.so") or die "copy: $!";
run('truncate', '-s', $half, "$dir/half.so");
verdict('half.so', "refused: truncated: the section header table ends at "
        . "byte $shdr_end, but the file has only $half bytes",
        'truncated to half');

write_file('short.so', substr($good, 0, 40));
verdict('short.so', 'refused: truncated: 40 bytes, less than the '
        . "$elf->{ehsize}-byte ELF header", 'truncated inside the header');

my $dynsym = $elf->{sections}{'.dynsym'};
my $forged = patch($good, $dynsym->{hdr} + $elf->{sh_offset_at},
                   pack($elf->{word}, $len));

write_file('forged.so', $forged);
verdict('forged.so', "refused: truncated: section $dynsym->{index} "
        . '(.dynsym) ends at byte ' . ($len + $dynsym->{size})
        . ", but the file has only $len bytes",
        'section contents past the end');

my ($load) = grep { $_->{type} == 1 && $_->{filesz} > 0 } @{ $elf->{phdrs} };

write_file('segment.so', patch($good, $load->{hdr} + $elf->{p_offset_at},
                               pack($elf->{word}, $len)));
verdict('segment.so', "refused: truncated: segment $load->{index} (PT_LOAD) "
        . 'ends at byte ' . ($len + $load->{filesz})
        . ", but the file has only $len bytes", 'segment past the end');

write_file('noshdr.so', patch($good, $elf->{shoff_at},
                              pack($elf->{word}, 0)));
verdict('noshdr.so', 'refused: has no section headers, so its exports '
        . 'cannot be checked', 'section header table removed');


# --- refused: no usable libffi_init

verdict('noinit.so', 'refused: does not export libffi_init: no symbol '
        . 'of that name in .dynsym', 'library without libffi_init');
verdict('object.so', 'refused: does not export libffi_init: its symbol '
        . 'type is STT_OBJECT, expected STT_FUNC', 'libffi_init is data');
verdict('undef.so', 'refused: does not export libffi_init: it is '
        . 'undefined (SHN_UNDEF), expected a definition',
        'libffi_init only imported');

my $sym = find_dynsym($good, $elf, 'libffi_init');

write_file('hidden.so', patch($good, $sym->{other_at}, chr 2));
verdict('hidden.so', 'refused: does not export libffi_init: its '
        . 'visibility is STV_HIDDEN, expected STV_DEFAULT or STV_PROTECTED',
        'hidden libffi_init');

write_file('local.so', patch($good, $sym->{info_at},
                             chr($sym->{info} & 0x0f)));
verdict('local.so', 'refused: does not export libffi_init: its binding '
        . 'is STB_LOCAL, expected STB_GLOBAL or STB_WEAK',
        'local libffi_init');


# --- the tool itself

mkdir "$dir/adir" or die "mkdir: $!";
verdict('adir', 'refused: is not a regular file, expected an ELF shared '
        . 'library', 'directory');
verdict('missing.so', 'refused: cannot be opened: No such file or '
        . 'directory', 'missing file');

my ($out, $rc) = check("$dir/good.so", "$dir/jvm.so");
is($rc, 0, 'exit status 0 when every file is ok');
is(scalar(() = $out =~ /: ok /g), 2, 'one line per file');

($out, $rc) = check("$dir/good.so", "$dir/text.txt", "$dir/jvm.so");
is($rc, 1, 'exit status 1 when a file is refused');
is_deeply([ map { /^(.*?): (ok|refused)[: ]/ ? "$1 $2" : $_ }
            split /\n/, $out ],
          [ "$dir/good.so ok", "$dir/text.txt refused", "$dir/jvm.so ok" ],
          'files reported in order');

($out, $rc) = check();
is($rc, 2, 'exit status 2 without arguments');

done_testing();


sub verdict {
    my ($name, $expected, $what) = @_;
    my ($out, $rc) = check("$dir/$name");

    is($out, "$dir/$name: $expected\n", $what);
}


sub check {
    my @files = @_;

    # only the usage message goes to stderr; stdout is the verdict
    open(my $esave, '>&', \*STDERR) or die "dup: $!";
    open(STDERR, '>', '/dev/null') or die "/dev/null: $!";
    open(my $fh, '-|', $check, @files) or die "$check: $!";
    open(STDERR, '>&', $esave) or die "dup: $!";
    local $/;
    my $out = <$fh> // '';
    close $fh;

    return ($out, $? >> 8);
}


sub so {
    my ($out, $src, @flags) = @_;

    run('gcc', '-shared', '-fPIC', '-o', "$dir/$out", "$dir/$src", @flags);
}


sub run {
    my @cmd = @_;
    my $log = "$dir/cmd.log";

    # keep the output for the failure message; a quiet test otherwise
    open(my $save, '>&', \*STDOUT) or die "dup: $!";
    open(my $esave, '>&', \*STDERR) or die "dup: $!";
    open(STDOUT, '>', $log) or die "$log: $!";
    open(STDERR, '>&', \*STDOUT) or die "dup: $!";
    my $rc = system(@cmd);
    open(STDOUT, '>&', $save) or die "dup: $!";
    open(STDERR, '>&', $esave) or die "dup: $!";

    return if $rc == 0;

    BAIL_OUT("@cmd failed:\n" . slurp_path($log));
}


sub build_id {
    my ($name) = @_;

    open(my $fh, '-|', 'readelf', '-n', "$dir/$name") or die "readelf: $!";
    local $/;
    my $notes = <$fh> // '';
    close $fh;

    return $notes =~ /Build ID: ([0-9a-f]+)/ ? $1 : 'none';
}


sub write_file {
    my ($name, $data) = @_;

    open(my $fh, '>:raw', "$dir/$name") or die "$name: $!";
    print $fh $data;
    close $fh or die "$name: $!";
}


sub slurp {
    return slurp_path("$dir/$_[0]");
}


sub slurp_path {
    my ($path) = @_;

    open(my $fh, '<:raw', $path) or die "$path: $!";
    local $/;
    my $data = <$fh>;
    close $fh;

    return $data;
}


sub patch {
    my ($data, $at, $bytes) = @_;

    substr($data, $at, length $bytes) = $bytes;

    return $data;
}


# where the fields the forged files need live; native byte order throughout,
# like the files gcc just built

sub elf_layout {
    my ($data) = @_;
    my $class = unpack('C', substr($data, 4, 1));
    my $e = $class == 2
        ? { word => 'Q', shoff_at => 40, shent_at => 58, ehsize => 64,
            sh_offset_at => 24, sh_size_at => 32, sh_link_at => 40,
            symsize => 24, sym_info_at => 4,
            phoff_at => 32, phent_at => 54, p_offset_at => 8,
            p_filesz_at => 32 }
        : { word => 'L', shoff_at => 32, shent_at => 46, ehsize => 52,
            sh_offset_at => 16, sh_size_at => 20, sh_link_at => 24,
            symsize => 16, sym_info_at => 12,
            phoff_at => 28, phent_at => 42, p_offset_at => 4,
            p_filesz_at => 16 };
    my $w = $e->{word};
    my $wlen = length pack $w;

    $e->{class} = $class;
    $e->{machine} = unpack('S', substr($data, 18, 2));
    $e->{shoff} = unpack($w, substr($data, $e->{shoff_at}, $wlen));
    ($e->{shentsize}, $e->{shnum}, $e->{shstrndx})
        = unpack('SSS', substr($data, $e->{shent_at}, 6));

    my $phoff = unpack($w, substr($data, $e->{phoff_at}, $wlen));
    my ($phentsize, $phnum) = unpack('SS', substr($data, $e->{phent_at}, 4));

    for my $i (0 .. $phnum - 1) {
        my $hdr = $phoff + $i * $phentsize;
        push @{ $e->{phdrs} }, {
            index => $i,
            hdr => $hdr,
            type => unpack('L', substr($data, $hdr, 4)),
            filesz => unpack($w, substr($data, $hdr + $e->{p_filesz_at},
                                        $wlen)),
        };
    }

    my @shdrs;

    for my $i (0 .. $e->{shnum} - 1) {
        my $hdr = $e->{shoff} + $i * $e->{shentsize};
        push @shdrs, {
            index => $i,
            hdr => $hdr,
            name_off => unpack('L', substr($data, $hdr, 4)),
            offset => unpack($w, substr($data, $hdr + $e->{sh_offset_at},
                                        $wlen)),
            size => unpack($w, substr($data, $hdr + $e->{sh_size_at},
                                      $wlen)),
            link => unpack('L', substr($data, $hdr + $e->{sh_link_at}, 4)),
        };
    }

    my $names = $shdrs[$e->{shstrndx}]{offset};

    for my $s (@shdrs) {
        my $name = unpack('Z*', substr($data, $names + $s->{name_off}));
        $e->{sections}{$name} = $s;
    }

    $e->{shdrs} = \@shdrs;

    return $e;
}


sub find_dynsym {
    my ($data, $e, $want) = @_;
    my $dynsym = $e->{sections}{'.dynsym'};
    my $strtab = $e->{shdrs}[$dynsym->{link}]{offset};

    for (my $at = $dynsym->{offset};
         $at < $dynsym->{offset} + $dynsym->{size};
         $at += $e->{symsize})
    {
        my $name_off = unpack('L', substr($data, $at, 4));
        my $name = unpack('Z*', substr($data, $strtab + $name_off));

        next unless $name eq $want;

        my $info_at = $at + $e->{sym_info_at};

        return { info_at => $info_at, other_at => $info_at + 1,
                 info => unpack('C', substr($data, $info_at, 1)) };
    }

    die "$want not in .dynsym";
}
