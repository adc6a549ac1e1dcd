//! Owns the helpers that read ARM resource ids for labels and messages (no requests, no
//! state): [`short`], the last segment of an id.

/// The last segment of a resource id, for short labels.
pub fn short(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_is_the_last_segment() {
        assert_eq!(short("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/nic-a"), "nic-a");
        assert_eq!(short("plain"), "plain");
    }
}
