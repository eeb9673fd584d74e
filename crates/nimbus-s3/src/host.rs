//! Virtual-hosted-style addressing: `BUCKET.localhost[:PORT]` names the bucket; every other
//! host (an IP address, `localhost` itself, a proxy's name) is path-style.

use s3s::host::{S3Host, VirtualHost};
use s3s::S3Result;

pub(crate) struct Localhost;

impl S3Host for Localhost {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
        match name.strip_suffix(".localhost") {
            Some(bucket) if !bucket.is_empty() => Ok(VirtualHost::new(host).with_bucket(bucket)),
            _ => Ok(VirtualHost::new(host)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_subdomains_of_localhost_name_a_bucket() {
        let h = Localhost;
        assert_eq!(
            h.parse_host_header("photos.localhost:9000")
                .unwrap()
                .bucket(),
            Some("photos")
        );
        assert_eq!(
            h.parse_host_header("a.b.localhost").unwrap().bucket(),
            Some("a.b")
        );
        assert_eq!(
            h.parse_host_header("localhost:9000").unwrap().bucket(),
            None
        );
        assert_eq!(
            h.parse_host_header("s3.example.com").unwrap().bucket(),
            None
        );
    }
}
