//! The bulk-stats groups libvirt can fill, as a small bit set that maps
//! one-to-one onto `VIR_DOMAIN_STATS_*`.

use std::fmt;

/// One stats group of `virConnectGetAllDomainStats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    State,
    Cpu,
    Balloon,
    Vcpu,
    Net,
    Block,
    Perf,
}

impl Group {
    /// Every group, in libvirt's bit order.
    pub const ALL: [Group; 7] = [
        Group::State,
        Group::Cpu,
        Group::Balloon,
        Group::Vcpu,
        Group::Net,
        Group::Block,
        Group::Perf,
    ];

    /// The `VIR_DOMAIN_STATS_*` bit of this group.
    pub(crate) fn bit(self) -> u32 {
        match self {
            Group::State => 1 << 0,
            Group::Cpu => 1 << 1,
            Group::Balloon => 1 << 2,
            Group::Vcpu => 1 << 3,
            Group::Net => 1 << 4,
            Group::Block => 1 << 5,
            Group::Perf => 1 << 6,
        }
    }

    /// The name used in config files and logs.
    pub fn name(self) -> &'static str {
        match self {
            Group::State => "state",
            Group::Cpu => "cpu",
            Group::Balloon => "balloon",
            Group::Vcpu => "vcpu",
            Group::Net => "net",
            Group::Block => "block",
            Group::Perf => "perf",
        }
    }

    /// Whether libvirt answers this group without asking QEMU over its
    /// monitor; only these may be polled faster than once a second.
    pub(crate) fn is_cheap(self) -> bool {
        matches!(self, Group::State | Group::Net | Group::Perf)
    }

    /// Parses a config-file group name.
    pub(crate) fn from_name(name: &str) -> Option<Group> {
        Group::ALL.into_iter().find(|g| g.name() == name)
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of groups, as the `stats` mask of one bulk call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Groups(u32);

impl Groups {
    /// The empty set.
    pub(crate) const NONE: Groups = Groups(0);

    /// Adds a group.
    pub(crate) fn insert(&mut self, g: Group) {
        self.0 |= g.bit();
    }

    /// Whether the set holds `g`.
    pub(crate) fn contains(self, g: Group) -> bool {
        self.0 & g.bit() != 0
    }

    /// The raw `VIR_DOMAIN_STATS_*` mask.
    pub(crate) fn mask(self) -> u32 {
        self.0
    }

    /// The groups in the set.
    pub(crate) fn iter(self) -> impl Iterator<Item = Group> {
        Group::ALL.into_iter().filter(move |g| self.contains(*g))
    }
}

impl FromIterator<Group> for Groups {
    fn from_iter<I: IntoIterator<Item = Group>>(iter: I) -> Self {
        let mut set = Groups::NONE;
        for g in iter {
            set.insert(g);
        }
        set
    }
}

impl fmt::Display for Groups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Group::name).collect();
        f.write_str(&names.join(","))
    }
}
