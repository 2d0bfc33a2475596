#!/usr/bin/perl
# Counts what AddressSanitizer wrote under a log folder (t/memcheck/run.sh):
# error reports, and direct leaks of memory the module allocated.
# usage: asan-report.pl LOGDIR [PROVE_EXIT]; exits non-zero on either.

use strict;
use warnings;

my ($dir, $proved) = @ARGV;
die "usage: $0 LOGDIR [PROVE_EXIT]\n" unless defined $dir && -d $dir;
$proved //= 0;

# a frame is ours when it is in the module (by name or by file)
my $OURS = qr/ngx_http_lua_ffi_|ngx_http_lua_ffi_module\.so/;

my ($errors, $our_leaks, $other_leaks, $files) = (0, 0, 0, 0);
my (@error_heads, %other_tops);

for my $file (sort glob "$dir/asan.*") {
    $files++;
    open my $fh, '<', $file or die "$file: $!\n";
    my @lines = <$fh>;
    close $fh;

    for my $i (0 .. $#lines) {
        my $line = $lines[$i];

        if ($line =~ /ERROR: AddressSanitizer: (.*)/) {
            $errors++;
            # the report's first frames say where
            my @frames = grep { /^\s+#\d/ } @lines[$i + 1 .. $#lines];
            push @error_heads, "$file: $1\n" . join '', @frames[0 .. 5];
            next;
        }

        next unless $line =~ /^Direct leak of (\d+) byte/;

        my @frames;
        for my $j ($i + 1 .. $#lines) {
            last unless $lines[$j] =~ /^\s+#\d/;
            push @frames, $lines[$j];
        }

        if (grep { $_ =~ $OURS } @frames) {
            $our_leaks++;
            push @error_heads, "$file: $line" . join '', @frames[0 .. 7];
        } else {
            $other_leaks++;
            # the first frame past the allocator names the owner
            my ($top) = grep { !/malloc|calloc|realloc|strdup|asan/ } @frames;
            $top = defined $top ? $top : $frames[0] // '?';
            $top =~ s/^\s+#\d+ 0x[0-9a-f]+ //;
            $top =~ s/\s+$//;
            $other_tops{$top}++;
        }
    }
}

print "--- AddressSanitizer: $files log file(s) under $dir\n";
print $_, "\n" for @error_heads;
if (%other_tops) {
    print "leaks outside the module (not counted), by first frame:\n";
    printf "  %4d  %s\n", $other_tops{$_}, $_
        for sort { $other_tops{$b} <=> $other_tops{$a} } keys %other_tops;
}
print "asan: $errors error report(s), $our_leaks direct leak(s) in the "
    . "module, $other_leaks elsewhere\n";

my $failed = ($errors || $our_leaks) ? 1 : 0;
my $passed = $failed ? 0 : 1;
print "memcheck: $passed passed, $failed failed\n";

exit($failed || $proved ? 1 : 0);
