package WorkerConn;
# A keep-alive connection to one chosen worker: every request on it is
# served by the worker that accepted it, so a test can pick which worker
# coordinates a reload or which one loads a runtime. The server must have
# "location = /pid { content_by_lua_block { ngx.print(ngx.worker.pid()) } }".

use strict;
use warnings;

use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time);

use FFITest;


sub new {
    my ($class) = @_;
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => FFITest::port(),
                                     Proto => 'tcp', Timeout => 10)
        or die "connect: $!\n";
    binmode $sock;
    return bless { sock => $sock, buf => '' }, $class;
}


# a connection served by worker $pid (undef: any but those in @not). The
# kernel picks the worker that accepts (an idle one that registered first
# may take every connection for a while): ask until the one wanted did,
# up to a deadline that only guards against a hang
sub to_worker {
    my ($class, $pid, @not) = @_;
    my $deadline = time + FFITest::deadline(60);
    for (my $n = 0; $n < 500 || time < $deadline; $n++) {
        my $c = $class->new;
        my (undef, $got) = $c->request('GET', '/pid');
        $c->{pid} = $got;
        return $c if defined $pid ? $got == $pid : !grep { $_ == $got } @not;
        $c->close;
    }
    die "no connection reached worker " . ($pid // "but @not") . "\n";
}


sub pid { $_[0]{pid} }


sub send_request {
    my ($self, $method, $path) = @_;
    my $req = "$method $path HTTP/1.1\r\nHost: localhost\r\n"
            . ($method eq 'POST' ? "Content-Length: 0\r\n" : '') . "\r\n";
    print { $self->{sock} } $req;
    $self->{sock}->flush;
}


# (status, body) of the next response, waiting at most $timeout s
sub read_response {
    my ($self, $timeout) = @_;
    my $deadline = time + FFITest::deadline($timeout || 30);
    my $sel = IO::Select->new($self->{sock});
    for (;;) {
        if ($self->{buf} =~ /\A(HTTP\/1\.1 (\d+)[^\r]*\r\n(.*?)\r\n\r\n)/s) {
            my ($head, $status, $headers) = ($1, $2, $3);
            my $rest = substr($self->{buf}, length $head);
            if ($headers =~ /^content-length:\s*(\d+)/mi) {
                if (length $rest >= $1) {
                    my $body = substr($rest, 0, $1);
                    $self->{buf} = substr($rest, $1);
                    return ($status, $body);
                }
            } elsif ($headers =~ /^transfer-encoding:\s*chunked/mi) {
                my ($body, $p) = ('', 0);
                for (;;) {
                    last unless substr($rest, $p) =~ /\A([0-9a-f]+)\r\n/i;
                    my ($len, $hl) = (hex $1, length($1) + 2);
                    last if length($rest) < $p + $hl + $len + 2;
                    if ($len == 0) {
                        $self->{buf} = substr($rest, $p + $hl + 2);
                        return ($status, $body);
                    }
                    $body .= substr($rest, $p + $hl, $len);
                    $p += $hl + $len + 2;
                }
            } else {
                return ($status, $rest) if $status == 304 || $status == 204;
            }
        }
        my $left = $deadline - time;
        die "no response within ${timeout}s\n" if $left <= 0;
        next unless $sel->can_read($left);
        my $n = sysread($self->{sock}, my $chunk, 65536);
        die "connection closed\n" unless $n;
        $self->{buf} .= $chunk;
    }
}


sub request {
    my ($self, $method, $path, $timeout) = @_;
    $self->send_request($method, $path);
    return $self->read_response($timeout);
}


sub close {
    my ($self) = @_;
    close $self->{sock} if $self->{sock};
    delete $self->{sock};
}

1;
