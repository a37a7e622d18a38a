# The release's metadata agree: one version (the Makefile's EXTVERSION) in
# mq.control, mq_pgmq.control, META.json, the changelog's newest section
# and debian/changelog; the licence is the PostgreSQL Licence, in LICENSE,
# META.json and debian/copyright; every version script META.json names
# exists.  A release whose files disagree is refused by PGXN and confuses
# packagers, and nothing else would notice.
use strict;
use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use JSON::PP;
use Test::More;

my $src = $ENV{MQ_SOURCE_DIR} // abs_path(dirname(abs_path(__FILE__)) . "/../..");

sub slurp
{
	my ($file) = @_;
	open my $fh, '<', "$src/$file" or die "could not read $src/$file: $!";
	local $/;
	return scalar <$fh>;
}

my ($version) = slurp('Makefile') =~ /^EXTVERSION\s*=\s*(\S+)/m;
ok(defined $version, "Makefile sets EXTVERSION ($version)");

for my $control ('mq.control', 'mq_pgmq.control')
{
	my ($v) = slurp($control) =~ /^default_version\s*=\s*'([^']+)'/m;
	is($v, $version, "$control: default_version is EXTVERSION");
}

my $meta = JSON::PP->new->decode(slurp('META.json'));
is($meta->{version}, $version, 'META.json: version is EXTVERSION');
is($meta->{license}, 'postgresql', 'META.json: licence is postgresql');
for my $ext (sort keys %{ $meta->{provides} })
{
	my $p = $meta->{provides}{$ext};
	is($p->{version}, $version, "META.json: $ext is at EXTVERSION");
	ok(-f "$src/$p->{file}", "META.json: ${ext}'s file $p->{file} exists");
	ok(-f "$src/$p->{docfile}", "META.json: ${ext}'s docfile $p->{docfile} exists");
}

like(slurp('LICENSE'), qr/PROVIDED HEREUNDER IS ON AN "AS IS" BASIS/,
	'LICENSE is the PostgreSQL Licence');
my ($newest) = slurp('docs/changelog.md') =~ /^##\s+\[?v?(\d+\.\d+\.\d+)/m;
is($newest, $version, "docs/changelog.md: the newest section is $version");

# every earlier version is frozen: its script committed, and an update
# script leaving it (docs/packaging.md, "The next version")
for my $old (grep { $_ ne $version } slurp('docs/changelog.md') =~ /^##\s+\[?v?(\d+\.\d+\.\d+)/mg)
{
	ok(-f "$src/sql/mq--$old.sql", "$old: its script sql/mq--$old.sql is committed");
	ok(scalar(glob("$src/sql/mq--$old--*.sql")), "$old: an update script leaves it");
}

# the Debian package (debian/, docs/packaging.md): its upstream version and
# its licence
my ($debversion) = slurp('debian/changelog') =~ /^mq \(([^)]+)\)/;
is($debversion =~ s/-[^-]+$//r, $version,
	"debian/changelog: the newest entry ($debversion) is EXTVERSION plus a revision");
like(slurp('debian/copyright'), qr/^Files: \*\n(?:.+\n)*?License: PostgreSQL$/m,
	'debian/copyright: the files are under the PostgreSQL Licence');

done_testing();
