//! What `cargo xtask bench l4` must see before it believes a cost: the
//! order the rows run in each round, and the invariants of their costs.
//!
//! Each row does all of another row's work and more in some pairs: C and Cd
//! redirect as R does, after a lookup and a rewrite; Bm is B's DNAT with a
//! masquerade; C rewrites what Cd rewrites and the source as well; every
//! row does what the floor A does (receive the frame). A measure by which
//! such a row costs less than the row it contains measured something else
//! (the machine's drift, another process, state left by an earlier row),
//! so a round that breaks an invariant gives no ratio, and a pair whose
//! medians break one is judged invalid rather than met or missed.

use super::{l4::Row, measure::median_of};

/// The rows whose work contains another's, as (contained, containing,
/// why): the containing row cannot cost less. Not Cd and C: full NAT
/// rewrites more at the edge, but the backends then answer the edge on
/// their link instead of routing to the client through it, so what the
/// load core spends on a datagram can be less with C (33-47 ns less by the
/// generator and ksoftirqd in the runs of 2026-12-07).
pub const CONTAINS: [(Row, Row, &str); 3] = [
    (
        Row::Redirect,
        Row::XdpIngressDnat,
        "redirects as R does, after a lookup and a rewrite",
    ),
    (
        Row::Redirect,
        Row::XdpIngress,
        "redirects as R does, after a lookup and a rewrite",
    ),
    (
        Row::Nftables,
        Row::NftablesMasquerade,
        "does B's DNAT and a masquerade",
    ),
];

/// The order of `count` rows in round `round` (from 0), as indices: a
/// balanced Latin square (Williams' design), so that over `count` rounds
/// every row runs once in every place, and (for an even count) right after
/// every other row once. A row's place in the round then moves its cost
/// the same way for every row, not systematically for some.
pub fn round_order(count: usize, round: usize) -> Vec<usize> {
    // 0, 1, n-1, 2, n-2, ...: each difference between neighbours once.
    let mut first = Vec::with_capacity(count);
    let (mut low, mut high) = (1, count);
    for place in 0..count {
        if place == 0 {
            first.push(0);
        } else if place % 2 == 1 {
            first.push(low);
            low += 1;
        } else {
            high -= 1;
            first.push(high);
        }
    }
    first.into_iter().map(|row| (row + round) % count).collect()
}

/// An invariant a set of costs breaks: the two rows it compares (the
/// cheaper one second) and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub rows: [Row; 2],
    pub text: String,
}

/// The invariants that the costs of `rows` (`cost`: a row's cost, ns a
/// packet, floor included) break: a row cheaper than the floor A, or than
/// a row whose work it contains. Rows not in `rows` are not judged.
pub fn violations(rows: &[Row], cost: impl Fn(Row) -> f64) -> Vec<Violation> {
    let mut found = Vec::new();
    if rows.contains(&Row::EdgeDrop) {
        let floor = cost(Row::EdgeDrop);
        for &row in rows.iter().filter(|row| **row != Row::EdgeDrop) {
            if cost(row) < floor {
                found.push(Violation {
                    rows: [Row::EdgeDrop, row],
                    text: format!(
                        "{} cost {:.0} ns less than the floor A",
                        row.letter(),
                        floor - cost(row)
                    ),
                });
            }
        }
    }
    for (inner, outer, why) in CONTAINS {
        if rows.contains(&inner) && rows.contains(&outer) && cost(outer) < cost(inner) {
            found.push(Violation {
                rows: [inner, outer],
                text: format!(
                    "{} cost {:.0} ns less than {}, though it {why}",
                    outer.letter(),
                    cost(inner) - cost(outer),
                    inner.letter()
                ),
            });
        }
    }
    found
}

/// One measure of every row's cost in every round, checked against the
/// invariants round by round and in its medians.
#[derive(Debug, Clone)]
pub struct Assessment {
    rows: Vec<Row>,
    /// Per row, per round: ns a packet.
    costs: Vec<Vec<f64>>,
    /// Per row, per round: whether other processes disturbed it.
    disturbed: Vec<Vec<bool>>,
    /// Per round: the invariants it broke (none: the round is valid).
    round_violations: Vec<Vec<Violation>>,
    /// Per row: the rounds its median is over.
    counted: Vec<Vec<usize>>,
    /// Per row: the median over its counted rounds.
    medians: Vec<f64>,
    /// The invariants the medians break.
    median_violations: Vec<Violation>,
}

/// A valid round's `(numerator - A) / (denominator - A)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundRatio {
    /// The round, from 0.
    pub round: usize,
    pub ratio: f64,
    /// Whether other processes disturbed one of the three rows in it.
    pub disturbed: bool,
}

/// A like-for-like pair's verdict by one measure.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The xdp-ingress row cost at most a third of the nftables row.
    Met,
    Missed,
    /// The costs break an invariant (what they break): no ratio stands.
    Invalid(Vec<String>),
    /// A row of the pair was not measured (`--only`).
    NotMeasured,
}

impl Assessment {
    /// Checks `costs` and `disturbed` (per row of `rows`, per round). A
    /// row's median is over the valid rounds no other process disturbed
    /// for it (all valid rounds if each was; all rounds if none is valid).
    pub fn new(rows: &[Row], costs: Vec<Vec<f64>>, disturbed: Vec<Vec<bool>>) -> Self {
        let round_count = costs.iter().map(Vec::len).min().unwrap_or(0);
        let index = |row: Row| rows.iter().position(|r| *r == row);
        let round_violations: Vec<Vec<Violation>> = (0..round_count)
            .map(|round| violations(rows, |row| index(row).map_or(0.0, |i| costs[i][round])))
            .collect();
        let valid: Vec<usize> = (0..round_count)
            .filter(|round| round_violations[*round].is_empty())
            .collect();
        let candidates = if valid.is_empty() {
            (0..round_count).collect()
        } else {
            valid
        };
        let counted: Vec<Vec<usize>> = (0..rows.len())
            .map(|i| {
                let quiet: Vec<usize> = candidates
                    .iter()
                    .copied()
                    .filter(|round| !disturbed[i][*round])
                    .collect();
                if quiet.is_empty() {
                    candidates.clone()
                } else {
                    quiet
                }
            })
            .collect();
        let medians: Vec<f64> = counted
            .iter()
            .enumerate()
            .map(|(i, rounds)| {
                let values: Vec<&f64> = rounds.iter().map(|round| &costs[i][*round]).collect();
                median_of(&values, |cost| *cost)
            })
            .collect();
        let median_violations = violations(rows, |row| index(row).map_or(0.0, |i| medians[i]));
        Self {
            rows: rows.to_vec(),
            costs,
            disturbed,
            round_violations,
            counted,
            medians,
            median_violations,
        }
    }

    fn index(&self, row: Row) -> Option<usize> {
        self.rows.iter().position(|r| *r == row)
    }

    /// The rounds `row`'s median is over (none when not measured).
    pub fn counted(&self, row: Row) -> &[usize] {
        self.index(row).map_or(&[], |i| self.counted[i].as_slice())
    }

    /// How many rounds were measured.
    pub fn round_count(&self) -> usize {
        self.round_violations.len()
    }

    /// The rounds that broke no invariant.
    pub fn valid_rounds(&self) -> Vec<usize> {
        (0..self.round_violations.len())
            .filter(|round| self.round_violations[*round].is_empty())
            .collect()
    }

    /// The rounds that broke an invariant, with what they broke.
    pub fn invalid_rounds(&self) -> Vec<(usize, &[Violation])> {
        self.round_violations
            .iter()
            .enumerate()
            .filter(|(_, found)| !found.is_empty())
            .map(|(round, found)| (round, found.as_slice()))
            .collect()
    }

    /// The invariants the medians break.
    #[cfg(test)]
    pub fn median_violations(&self) -> &[Violation] {
        &self.median_violations
    }

    /// A row's median cost (0 when not measured).
    pub fn median(&self, row: Row) -> f64 {
        self.index(row).map_or(0.0, |i| self.medians[i])
    }

    /// A row's median cost above the floor A's.
    pub fn above_floor(&self, row: Row) -> f64 {
        self.median(row) - self.median(Row::EdgeDrop)
    }

    /// Whether both rows were measured.
    pub fn measured(&self, a: Row, b: Row) -> bool {
        self.index(a).is_some() && self.index(b).is_some()
    }

    /// The invariants the medians break that involve `rows` or the floor:
    /// those that make a ratio over A of `rows` meaningless.
    fn breaking(&self, rows: &[Row]) -> Vec<String> {
        self.median_violations
            .iter()
            .filter(|v| {
                v.rows
                    .iter()
                    .any(|row| *row == Row::EdgeDrop || rows.contains(row))
            })
            .map(|v| v.text.clone())
            .collect()
    }

    /// `(numerator - A) / (denominator - A)` of the medians, or what makes
    /// it invalid.
    pub fn ratio(&self, numerator: Row, denominator: Row) -> Result<f64, Vec<String>> {
        if !self.measured(numerator, denominator) {
            return Err(vec!["not measured".to_owned()]);
        }
        if self.valid_rounds().is_empty() {
            return Err(vec!["no round passed the checks".to_owned()]);
        }
        let breaking = self.breaking(&[numerator, denominator]);
        if !breaking.is_empty() {
            return Err(breaking);
        }
        let below = self.above_floor(denominator);
        if below <= 0.0 {
            return Err(vec![format!(
                "{} cost nothing above A",
                denominator.letter()
            )]);
        }
        Ok(self.above_floor(numerator) / below)
    }

    /// [`RoundRatio`] in each valid round where the denominator cost more
    /// than A.
    pub fn round_ratios(&self, numerator: Row, denominator: Row) -> Vec<RoundRatio> {
        let (Some(floor), Some(top), Some(bottom)) = (
            self.index(Row::EdgeDrop),
            self.index(numerator),
            self.index(denominator),
        ) else {
            return Vec::new();
        };
        self.valid_rounds()
            .into_iter()
            .filter_map(|round| {
                let cost = |i: usize| self.costs[i][round];
                let below = cost(bottom) - cost(floor);
                (below > 0.0).then(|| RoundRatio {
                    round,
                    ratio: (cost(top) - cost(floor)) / below,
                    disturbed: [floor, top, bottom]
                        .iter()
                        .any(|i| self.disturbed[*i][round]),
                })
            })
            .collect()
    }

    /// The lowest and highest of [`Self::round_ratios`], if any.
    pub fn spread(&self, numerator: Row, denominator: Row) -> Option<(f64, f64)> {
        let ratios = self.round_ratios(numerator, denominator);
        let first = ratios.first()?.ratio;
        Some(ratios.iter().fold((first, first), |(low, high), r| {
            (low.min(r.ratio), high.max(r.ratio))
        }))
    }

    /// The pair's verdict: the xdp-ingress row's cost above A at most a
    /// third of the nftables row's, by the medians, when they stand.
    pub fn verdict(&self, nftables: Row, xdp: Row) -> Verdict {
        if !self.measured(nftables, xdp) {
            return Verdict::NotMeasured;
        }
        match self.ratio(nftables, xdp) {
            Ok(ratio) if ratio >= 3.0 => Verdict::Met,
            Ok(_) => Verdict::Missed,
            Err(why) => Verdict::Invalid(why),
        }
    }
}

/// All pairs' verdicts as one: met when every pair is, invalid when any
/// is, not judged when a pair was not measured, else missed.
pub fn overall(verdicts: &[Verdict]) -> Verdict {
    if verdicts.iter().all(|v| *v == Verdict::Met) {
        Verdict::Met
    } else if verdicts.iter().any(|v| matches!(v, Verdict::Invalid(_))) {
        Verdict::Invalid(Vec::new())
    } else if verdicts.contains(&Verdict::NotMeasured) {
        Verdict::NotMeasured
    } else {
        Verdict::Missed
    }
}

impl Verdict {
    /// `target: met`, `target: MISSED`, `target: INVALID (why)`, `target:
    /// not judged (a pair not measured)`.
    pub fn describe(&self, target: &str) -> String {
        match self {
            Verdict::Met => format!("{target}: met"),
            Verdict::Missed => format!("{target}: MISSED"),
            Verdict::Invalid(why) if why.is_empty() => format!("{target}: INVALID"),
            Verdict::Invalid(why) => format!("{target}: INVALID ({})", why.join("; ")),
            Verdict::NotMeasured => format!("{target}: not judged (a pair not measured)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Row::*;

    const ROWS: [Row; 6] = [
        EdgeDrop,
        Redirect,
        Nftables,
        XdpIngressDnat,
        NftablesMasquerade,
        XdpIngress,
    ];

    /// An assessment of rounds given as (A, R, B, Cd, Bm, C) costs, none
    /// disturbed unless listed as (row index, round).
    fn assess(rounds: &[[f64; 6]], disturbed: &[(usize, usize)]) -> Assessment {
        let costs = (0..6)
            .map(|row| rounds.iter().map(|round| round[row]).collect())
            .collect();
        let flags = (0..6)
            .map(|row| {
                (0..rounds.len())
                    .map(|round| disturbed.contains(&(row, round)))
                    .collect()
            })
            .collect();
        Assessment::new(&ROWS, costs, flags)
    }

    #[test]
    fn every_row_runs_once_in_every_place_and_after_every_other_row() {
        assert_eq!(round_order(6, 0), vec![0, 1, 5, 2, 4, 3]);
        assert_eq!(round_order(6, 1), vec![1, 2, 0, 3, 5, 4]);
        for count in 1..=7 {
            let rounds: Vec<Vec<usize>> = (0..count).map(|r| round_order(count, r)).collect();
            for order in &rounds {
                let mut sorted = order.clone();
                sorted.sort_unstable();
                assert_eq!(sorted, (0..count).collect::<Vec<_>>(), "{order:?}");
            }
            for place in 0..count {
                let mut rows: Vec<usize> = rounds.iter().map(|order| order[place]).collect();
                rows.sort_unstable();
                assert_eq!(rows, (0..count).collect::<Vec<_>>(), "place {place}");
            }
            if count % 2 == 0 {
                let mut followings: Vec<(usize, usize)> = rounds
                    .iter()
                    .flat_map(|order| order.windows(2).map(|w| (w[0], w[1])))
                    .collect();
                followings.sort_unstable();
                followings.dedup();
                assert_eq!(followings.len(), count * (count - 1), "count {count}");
            }
        }
        // Later rounds start over.
        assert_eq!(round_order(6, 6), round_order(6, 0));
    }

    #[test]
    fn a_row_cheaper_than_a_row_it_contains_or_than_the_floor_breaks_an_invariant() {
        let table = |costs: [f64; 6]| {
            violations(&ROWS, |row| {
                costs[ROWS.iter().position(|r| *r == row).unwrap()]
            })
        };
        //           A      R      B      Cd     Bm     C
        assert!(table([430.0, 560.0, 1880.0, 600.0, 1910.0, 620.0]).is_empty());
        // Equal costs break nothing.
        assert!(table([430.0, 560.0, 1880.0, 560.0, 1880.0, 560.0]).is_empty());
        // The run: C below R, Bm below B.
        let found = table([2260.0, 3000.0, 3600.0, 2900.0, 2860.0, 2770.0]);
        let rows: Vec<[Row; 2]> = found.iter().map(|v| v.rows).collect();
        assert_eq!(
            rows,
            vec![
                [Redirect, XdpIngressDnat],
                [Redirect, XdpIngress],
                [Nftables, NftablesMasquerade],
            ]
        );
        assert_eq!(
            found[1].text,
            "C cost 230 ns less than R, though it redirects as R does, after a lookup and a rewrite"
        );
        // Below the floor.
        let found = table([500.0, 480.0, 1880.0, 600.0, 1910.0, 620.0]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].rows, [EdgeDrop, Redirect]);
        assert_eq!(found[0].text, "R cost 20 ns less than the floor A");
        // Rows not measured are not judged.
        let only = [EdgeDrop, Nftables, XdpIngress];
        let found = violations(&only, |row| if row == XdpIngress { 100.0 } else { 500.0 });
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].rows, [EdgeDrop, XdpIngress]);
    }

    #[test]
    fn valid_rounds_give_ratios_and_met_or_missed() {
        //                A      R      B       Cd     Bm      C
        let assessment = assess(
            &[
                [430.0, 560.0, 1880.0, 600.0, 1910.0, 620.0],
                [420.0, 540.0, 1900.0, 590.0, 1950.0, 640.0],
                [440.0, 580.0, 1860.0, 610.0, 1890.0, 650.0],
            ],
            &[],
        );
        assert_eq!(assessment.valid_rounds(), vec![0, 1, 2]);
        assert!(assessment.invalid_rounds().is_empty());
        // Medians: A 430, B 1880, Cd 600, Bm 1910, C 640.
        assert_eq!(assessment.above_floor(Nftables), 1450.0);
        assert_eq!(
            assessment.ratio(Nftables, XdpIngressDnat),
            Ok(1450.0 / 170.0)
        );
        assert_eq!(assessment.verdict(Nftables, XdpIngressDnat), Verdict::Met);
        assert_eq!(
            assessment.verdict(NftablesMasquerade, XdpIngress),
            Verdict::Met
        );
        let (low, high) = assessment.spread(Nftables, XdpIngressDnat).unwrap();
        assert!((low - 1420.0 / 170.0).abs() < 1e-9 && (high - 1480.0 / 170.0).abs() < 1e-9);

        // Cd a third and a bit of B: missed; C under a third of Bm: met.
        let missed = assess(&[[400.0, 500.0, 1000.0, 601.0, 1400.0, 700.0]], &[]);
        assert_eq!(missed.verdict(Nftables, XdpIngressDnat), Verdict::Missed);
        assert_eq!(missed.verdict(NftablesMasquerade, XdpIngress), Verdict::Met);
    }

    #[test]
    fn a_round_breaking_an_invariant_gives_no_ratio_and_is_listed() {
        //                A       R       B       Cd      Bm      C
        let assessment = assess(
            &[
                [2260.0, 3000.0, 4100.0, 3100.0, 4300.0, 3200.0],
                [2260.0, 3000.0, 3600.0, 2900.0, 2860.0, 2770.0],
                [2300.0, 3050.0, 4200.0, 3150.0, 4400.0, 3300.0],
            ],
            &[],
        );
        assert_eq!(assessment.valid_rounds(), vec![0, 2]);
        let invalid = assessment.invalid_rounds();
        assert_eq!(invalid.len(), 1);
        assert_eq!(invalid[0].0, 1);
        assert_eq!(invalid[0].1.len(), 3);
        let ratios = assessment.round_ratios(Nftables, XdpIngressDnat);
        assert_eq!(
            ratios.iter().map(|r| r.round).collect::<Vec<_>>(),
            vec![0, 2]
        );
        // The medians are over the valid rounds only: B (4100, 4200) -> 4200.
        assert_eq!(assessment.median(Nftables), 4200.0);
        assert!(assessment.median_violations().is_empty());
        assert_eq!(
            assessment.verdict(Nftables, XdpIngressDnat),
            Verdict::Missed
        );
    }

    #[test]
    fn medians_breaking_an_invariant_make_the_pairs_they_touch_invalid() {
        // Every round valid, but the medians come from different rounds.
        //                A      R      B       Cd     Bm      C
        let assessment = assess(
            &[
                [400.0, 640.0, 1800.0, 650.0, 1900.0, 700.0],
                [400.0, 500.0, 1800.0, 510.0, 1900.0, 700.0],
                [400.0, 620.0, 1800.0, 630.0, 1900.0, 700.0],
                [400.0, 590.0, 1800.0, 600.0, 1900.0, 700.0],
            ],
            &[(3, 2)],
        );
        // R: 500, 590, 620, 640 -> 620; Cd without its disturbed round 2:
        // 510, 600, 650 -> 600, below R.
        assert_eq!(assessment.valid_rounds(), vec![0, 1, 2, 3]);
        assert_eq!(assessment.counted(XdpIngressDnat), [0, 1, 3]);
        assert_eq!(assessment.median(Redirect), 620.0);
        assert_eq!(assessment.median(XdpIngressDnat), 600.0);
        let Verdict::Invalid(why) = assessment.verdict(Nftables, XdpIngressDnat) else {
            panic!("Cd's median is below R's");
        };
        assert_eq!(
            why,
            vec![
                "Cd cost 20 ns less than R, though it redirects as R does, after a lookup and a rewrite"
            ]
        );
        // C (700) is above R and Cd: the full-NAT pair stands.
        assert_eq!(
            assessment.verdict(NftablesMasquerade, XdpIngress),
            Verdict::Met
        );
        assert_eq!(assessment.round_ratios(Nftables, XdpIngressDnat).len(), 4);
        assert_eq!(
            overall(&[
                assessment.verdict(Nftables, XdpIngressDnat),
                assessment.verdict(NftablesMasquerade, XdpIngress)
            ]),
            Verdict::Invalid(Vec::new())
        );
    }

    #[test]
    fn bm_below_b_in_the_medians_invalidates_both_pairs() {
        //                A      R      B       Cd     Bm      C
        let assessment = assess(&[[430.0, 560.0, 1880.0, 600.0, 1870.0, 620.0]], &[]);
        assert_eq!(assessment.valid_rounds(), Vec::<usize>::new());
        assert!(assessment.round_ratios(Nftables, XdpIngressDnat).is_empty());
        for (nftables, xdp) in [(Nftables, XdpIngressDnat), (NftablesMasquerade, XdpIngress)] {
            assert!(matches!(
                assessment.verdict(nftables, xdp),
                Verdict::Invalid(_)
            ));
        }
        assert_eq!(
            assessment.ratio(Nftables, XdpIngressDnat),
            Err(vec!["no round passed the checks".to_owned()])
        );
    }

    #[test]
    fn a_floor_above_a_row_invalidates_every_pair() {
        //                A      R      B       Cd     Bm      C
        let rounds = [
            [430.0, 560.0, 1880.0, 600.0, 1910.0, 620.0],
            [700.0, 560.0, 1880.0, 600.0, 1910.0, 620.0],
            [700.0, 560.0, 1880.0, 600.0, 1910.0, 620.0],
        ];
        let assessment = assess(&rounds, &[]);
        // Only round 0 is valid, so the medians are round 0's: valid.
        assert_eq!(assessment.valid_rounds(), vec![0]);
        assert_eq!(assessment.verdict(Nftables, XdpIngressDnat), Verdict::Met);
        // With no valid round (A at 700 is above R, Cd and C), no pair
        // is judged.
        let assessment = assess(&rounds[1..], &[]);
        let Verdict::Invalid(why) = assessment.verdict(NftablesMasquerade, XdpIngress) else {
            panic!("no valid round");
        };
        assert_eq!(why, vec!["no round passed the checks"]);
    }

    #[test]
    fn pairs_not_measured_are_not_judged() {
        let rows = [EdgeDrop, Nftables, XdpIngressDnat];
        let assessment = Assessment::new(
            &rows,
            vec![vec![400.0], vec![1900.0], vec![600.0]],
            vec![vec![false]; 3],
        );
        assert_eq!(assessment.verdict(Nftables, XdpIngressDnat), Verdict::Met);
        assert_eq!(
            assessment.verdict(NftablesMasquerade, XdpIngress),
            Verdict::NotMeasured
        );
        assert_eq!(
            overall(&[Verdict::Met, Verdict::NotMeasured]),
            Verdict::NotMeasured
        );
        assert_eq!(overall(&[Verdict::Met, Verdict::Missed]), Verdict::Missed);
        assert_eq!(overall(&[Verdict::Met, Verdict::Met]), Verdict::Met);
        assert_eq!(
            Verdict::Invalid(vec!["C cost 5 ns less than R".into()]).describe("target"),
            "target: INVALID (C cost 5 ns less than R)"
        );
        assert_eq!(Verdict::Missed.describe("target"), "target: MISSED");
    }
}
