//! The listener map: which destination (address, protocol, port) the XDP
//! program hands to the proxy or drops. The desired set is computed from the
//! daemon's listen addresses; [`plan_sync`] diffs it against what the map
//! holds, keeping the counter slot of every listener that stays.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use ingress_common::{ListenerKey, ListenerValue, MAX_LISTENERS, family, protocol};

/// The listener keys that cover a socket the proxy listens on. An unspecified
/// IPv4 address is the IPv4 wildcard; an unspecified IPv6 address covers both
/// families, since Linux sockets on `[::]` accept IPv4 too.
pub fn keys_for_socket(addr: SocketAddr, l4_protocol: u8) -> Vec<ListenerKey> {
    let port = addr.port();
    let make = |family, addr: [u8; 16]| ListenerKey {
        addr,
        port,
        family,
        protocol: l4_protocol,
    };
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => vec![make(family::IPV4, [0; 16])],
        IpAddr::V6(ip) if ip.is_unspecified() => {
            vec![make(family::IPV4, [0; 16]), make(family::IPV6, [0; 16])]
        }
        ip => vec![key_for_ip(ip, port, l4_protocol)],
    }
}

/// The exact listener key for one address.
pub fn key_for_ip(ip: IpAddr, port: u16, l4_protocol: u8) -> ListenerKey {
    let mut addr = [0u8; 16];
    let family = match ip.to_canonical() {
        IpAddr::V4(v4) => {
            addr[..4].copy_from_slice(&v4.octets());
            family::IPV4
        }
        IpAddr::V6(v6) => {
            addr = v6.octets();
            family::IPV6
        }
    };
    ListenerKey {
        addr,
        port,
        family,
        protocol: l4_protocol,
    }
}

/// The address of a key, `None` for the wildcard.
pub fn key_ip(key: &ListenerKey) -> Option<IpAddr> {
    if key.addr == [0; 16] {
        return None;
    }
    Some(match key.family {
        family::IPV4 => IpAddr::from([key.addr[0], key.addr[1], key.addr[2], key.addr[3]]),
        _ => IpAddr::from(key.addr),
    })
}

/// `"tcp"`, `"udp"` or the number.
pub fn protocol_name(l4_protocol: u8) -> String {
    match l4_protocol {
        protocol::TCP => "tcp".into(),
        protocol::UDP => "udp".into(),
        other => other.to_string(),
    }
}

/// What to change in the listener map to reach the desired state.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListenerSyncPlan {
    /// Entries to write (new ones, and old ones whose action changed).
    pub upserts: Vec<(ListenerKey, ListenerValue)>,
    /// Counter slots to zero before their first use by a new listener.
    pub fresh_slots: Vec<u32>,
    /// Keys to delete.
    pub removals: Vec<ListenerKey>,
}

/// Why a desired listener set cannot be written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{wanted} listeners wanted, but the listener map holds at most {MAX_LISTENERS}")]
pub struct TooManyListeners {
    /// How many were asked for.
    pub wanted: usize,
}

/// Diffs `desired` (key -> action) against `present` (the map's contents).
/// Listeners that stay keep their id and counters; new ones get the lowest
/// free ids, whose slots are zeroed first.
pub fn plan_sync(
    present: &BTreeMap<ListenerKey, ListenerValue>,
    desired: &BTreeMap<ListenerKey, u32>,
) -> Result<ListenerSyncPlan, TooManyListeners> {
    if desired.len() > MAX_LISTENERS as usize {
        return Err(TooManyListeners {
            wanted: desired.len(),
        });
    }
    let mut plan = ListenerSyncPlan::default();
    let kept_ids: BTreeSet<u32> = present
        .iter()
        .filter(|(key, _)| desired.contains_key(key))
        .map(|(_, value)| value.listener_id)
        .collect();
    let mut free_ids = (0..MAX_LISTENERS).filter(|id| !kept_ids.contains(id));
    for (key, &wanted_action) in desired {
        match present.get(key) {
            Some(value) if value.action == wanted_action => {}
            Some(value) => plan.upserts.push((
                *key,
                ListenerValue {
                    action: wanted_action,
                    listener_id: value.listener_id,
                },
            )),
            None => {
                let listener_id = free_ids.next().expect("checked against MAX_LISTENERS");
                plan.fresh_slots.push(listener_id);
                plan.upserts.push((
                    *key,
                    ListenerValue {
                        action: wanted_action,
                        listener_id,
                    },
                ));
            }
        }
    }
    plan.removals = present
        .keys()
        .filter(|key| !desired.contains_key(key))
        .copied()
        .collect();
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use ingress_common::action;

    use super::*;

    fn tcp(addr: &str) -> Vec<ListenerKey> {
        keys_for_socket(addr.parse().unwrap(), protocol::TCP)
    }

    #[test]
    fn unspecified_ipv4_is_the_ipv4_wildcard() {
        let keys = tcp("0.0.0.0:80");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].family, family::IPV4);
        assert_eq!(keys[0].addr, [0; 16]);
        assert_eq!(keys[0].port, 80);
        assert_eq!(keys[0].protocol, protocol::TCP);
    }

    #[test]
    fn unspecified_ipv6_covers_both_families() {
        let families: Vec<u8> = tcp("[::]:443").iter().map(|k| k.family).collect();
        assert_eq!(families, vec![family::IPV4, family::IPV6]);
    }

    #[test]
    fn exact_addresses_round_trip() {
        let v4 = tcp("198.18.0.1:8080")[0];
        assert_eq!(&v4.addr[..4], &[198, 18, 0, 1]);
        assert_eq!(&v4.addr[4..], &[0; 12]);
        assert_eq!(key_ip(&v4), Some(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))));
        let v6 = tcp("[2001:db8::1]:80")[0];
        assert_eq!(v6.family, family::IPV6);
        assert_eq!(
            key_ip(&v6),
            Some(IpAddr::V6("2001:db8::1".parse().unwrap()))
        );
        // An IPv4-mapped IPv6 address is an IPv4 listener.
        let mapped = key_for_ip(
            IpAddr::V6(Ipv4Addr::new(198, 18, 0, 9).to_ipv6_mapped()),
            80,
            protocol::TCP,
        );
        assert_eq!(mapped.family, family::IPV4);
        assert_eq!(key_ip(&mapped.wildcard()), None);
    }

    fn desired(keys: &[(ListenerKey, u32)]) -> BTreeMap<ListenerKey, u32> {
        keys.iter().copied().collect()
    }

    /// Listeners with the `(action, listener_id)` each has in the map.
    fn assigned(entries: &[(ListenerKey, u32, u32)]) -> Vec<(ListenerKey, ListenerValue)> {
        entries
            .iter()
            .map(|&(key, action, listener_id)| {
                (
                    key,
                    ListenerValue {
                        action,
                        listener_id,
                    },
                )
            })
            .collect()
    }

    /// The listener map holding `entries` (key, action, listener_id).
    fn in_map(entries: &[(ListenerKey, u32, u32)]) -> BTreeMap<ListenerKey, ListenerValue> {
        assigned(entries).into_iter().collect()
    }

    #[test]
    fn first_sync_allocates_ids_from_zero() {
        let a = tcp("0.0.0.0:80")[0];
        let b = tcp("0.0.0.0:443")[0];
        let plan = plan_sync(
            &BTreeMap::new(),
            &desired(&[(a, action::PASS_TO_PROXY), (b, action::DROP)]),
        )
        .unwrap();
        assert_eq!(plan.removals, vec![]);
        assert_eq!(plan.fresh_slots, vec![0, 1]);
        assert_eq!(
            plan.upserts,
            assigned(&[(a, action::PASS_TO_PROXY, 0), (b, action::DROP, 1)])
        );
    }

    #[test]
    fn kept_listeners_keep_ids_and_counters() {
        let a = tcp("0.0.0.0:80")[0];
        let b = tcp("0.0.0.0:443")[0];
        let c = tcp("0.0.0.0:8443")[0];
        let present = in_map(&[(a, action::PASS_TO_PROXY, 0), (b, action::PASS_TO_PROXY, 1)]);
        // a stays as is, b changes action and keeps id 1, c is new: ids 0 and 1 stay in use,
        // so c gets 2.
        let plan = plan_sync(
            &present,
            &desired(&[
                (a, action::PASS_TO_PROXY),
                (b, action::DROP),
                (c, action::DROP),
            ]),
        )
        .unwrap();
        assert_eq!(plan.removals, vec![]);
        assert_eq!(plan.fresh_slots, vec![2]);
        assert_eq!(
            plan.upserts,
            assigned(&[(b, action::DROP, 1), (c, action::DROP, 2)])
        );
    }

    #[test]
    fn removed_listeners_free_their_ids() {
        let a = tcp("0.0.0.0:80")[0];
        let b = tcp("0.0.0.0:443")[0];
        let present = in_map(&[(a, action::PASS_TO_PROXY, 0), (b, action::PASS_TO_PROXY, 1)]);
        let c = tcp("0.0.0.0:8080")[0];
        let plan = plan_sync(
            &present,
            &desired(&[(b, action::PASS_TO_PROXY), (c, action::PASS_TO_PROXY)]),
        )
        .unwrap();
        assert_eq!(plan.removals, vec![a]);
        // id 0 is no longer kept, so the new listener reuses it, zeroed.
        assert_eq!(plan.fresh_slots, vec![0]);
        assert_eq!(plan.upserts, assigned(&[(c, action::PASS_TO_PROXY, 0)]));
    }

    #[test]
    fn an_unchanged_set_is_a_no_op() {
        let a = tcp("0.0.0.0:80")[0];
        let present = in_map(&[(a, action::PASS_TO_PROXY, 7)]);
        let plan = plan_sync(&present, &desired(&[(a, action::PASS_TO_PROXY)])).unwrap();
        assert_eq!(plan, ListenerSyncPlan::default());
    }

    #[test]
    fn too_many_listeners_is_an_error() {
        let wanted: BTreeMap<_, _> = (0..=MAX_LISTENERS)
            .map(|port| (tcp(&format!("0.0.0.0:{}", port + 1))[0], action::DROP))
            .collect();
        assert_eq!(
            plan_sync(&BTreeMap::new(), &wanted),
            Err(TooManyListeners {
                wanted: MAX_LISTENERS as usize + 1
            })
        );
    }
}
