#!/usr/bin/perl
# Pass the guest's console (stdin) through to stdout as it arrives, and take
# out the exit-status marker the guest init prints after the command:
#
#	@@DUET-VM <nonce> EXIT <status>@@
#
# The status is written to STATUSFILE. The marker may follow output that did
# not end in a newline, so it is matched anywhere, and a tail that could be
# the start of a marker is held back until the next read settles it. What the
# console shows after the marker is the guest powering off: dropped.
#
# usage: console-filter.pl NONCE STATUSFILE
use strict;
use warnings;

my ($nonce, $statusfile) = @ARGV;
die "usage: $0 NONCE STATUSFILE\n" unless defined $statusfile;

my $tag = "\@\@DUET-VM $nonce EXIT ";
my $marker = qr/\Q$tag\E(\d+)\@\@\r?\n?/;
my $maxlen = length($tag) + 3 + 2 + 2;	# status, "@@", "\r\n"

binmode STDIN;
binmode STDOUT;
$| = 1;

# Length of the longest suffix of $buf that could still grow into a marker.
sub held_back {
	my ($buf) = @_;
	my $len = length $buf;
	my $from = $len > $maxlen ? $len - $maxlen : 0;
	for my $i ($from .. $len - 1) {
		next unless substr($buf, $i, 1) eq '@';
		my $s = substr($buf, $i);
		if (length $s <= length $tag) {
			return $len - $i if substr($tag, 0, length $s) eq $s;
		} elsif (substr($s, 0, length $tag) eq $tag &&
			 substr($s, length $tag) =~ /^\d*(\@\@?)?\r?$/) {
			return $len - $i;
		}
	}
	return 0;
}

my $buf = '';
my $done = 0;
while (1) {
	my $n = sysread(STDIN, my $chunk, 65536);
	last unless $n;
	next if $done;
	$buf .= $chunk;
	if ($buf =~ $marker) {
		my $status = $1;
		print substr($buf, 0, $-[0]);
		open(my $fh, '>', $statusfile) or die "$statusfile: $!\n";
		print $fh "$status\n";
		close $fh;
		$done = 1;
		$buf = '';
		next;
	}
	my $keep = held_back($buf);
	print substr($buf, 0, length($buf) - $keep);
	$buf = substr($buf, length($buf) - $keep);
}
print $buf unless $done;
