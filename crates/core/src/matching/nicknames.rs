//! English given names and their familiar forms: "Beth Johnson" and "Elizabeth Johnson" are
//! one name written two ways, as are "Bill" and "Will" (both William). Used by the person-name
//! comparator, and by blocking: a name with a familiar form is also keyed by its formal
//! reading, so that the two meet in one block (at entry, the stored match keys).
//!
//! A familiar form may belong to several formal names (Alex: Alexander, Alexandra); two words
//! are the same given name when they share a formal name.

use super::fold;
use super::value::{NameValue, name_forms};

/// Formal given names (lower case) with their common familiar forms.
const GIVEN_NAMES: &[(&str, &[&str])] = &[
    ("abigail", &["abby", "abbie", "gail"]),
    ("albert", &["al", "bert", "bertie"]),
    ("alexander", &["alex", "alec", "sandy", "xander"]),
    ("alexandra", &["alex", "alexa", "lexi", "sandra", "sandy"]),
    ("alfred", &["al", "alf", "fred", "freddie"]),
    ("andrew", &["andy", "drew"]),
    ("angela", &["angie"]),
    ("anthony", &["tony", "ant"]),
    ("arthur", &["art", "artie"]),
    ("barbara", &["barb", "babs", "barbie"]),
    ("benjamin", &["ben", "benny", "benji"]),
    ("bradley", &["brad"]),
    ("catherine", &["cathy", "cat", "kate", "katie"]),
    ("charles", &["charlie", "chuck", "chas"]),
    ("charlotte", &["charlie", "lottie", "lotte"]),
    ("christina", &["chris", "tina", "chrissy"]),
    ("christine", &["chris", "chrissy", "tina"]),
    ("christopher", &["chris", "kit", "topher"]),
    ("cynthia", &["cindy"]),
    ("daniel", &["dan", "danny"]),
    ("david", &["dave", "davey"]),
    ("deborah", &["deb", "debbie", "debby"]),
    ("donald", &["don", "donnie"]),
    ("dorothy", &["dot", "dottie", "dolly"]),
    ("douglas", &["doug"]),
    ("edward", &["ed", "eddie", "ted", "ned"]),
    ("eleanor", &["ellie", "nell", "nora"]),
    ("elizabeth", &["liz", "lizzie", "beth", "betty", "betsy", "eliza", "libby", "lisa"]),
    ("emily", &["em", "emmy"]),
    ("frances", &["fran", "frankie"]),
    ("francis", &["frank", "fran"]),
    ("frederick", &["fred", "freddie", "rick"]),
    ("gabriel", &["gabe"]),
    ("gabrielle", &["gabby", "gabi"]),
    ("gerald", &["gerry", "jerry"]),
    ("gregory", &["greg"]),
    ("harold", &["harry", "hal"]),
    ("henry", &["hank", "harry", "hal"]),
    ("isabella", &["bella", "izzy", "isa"]),
    ("jacob", &["jake"]),
    ("james", &["jim", "jimmy", "jamie"]),
    ("janet", &["jan"]),
    ("jeffrey", &["jeff"]),
    ("jennifer", &["jen", "jenny", "jenn"]),
    ("jessica", &["jess", "jessie"]),
    ("john", &["jack", "johnny"]),
    ("jonathan", &["jon", "jonny"]),
    ("joseph", &["joe", "joey"]),
    ("joshua", &["josh"]),
    ("judith", &["judy", "jude"]),
    ("katherine", &["kate", "kathy", "katie", "kat", "kay"]),
    ("kathleen", &["kathy", "kate", "kay"]),
    ("kenneth", &["ken", "kenny"]),
    ("lawrence", &["larry", "laurie"]),
    ("leonard", &["leo", "len", "lenny"]),
    ("margaret", &["maggie", "meg", "peggy", "marge", "madge", "greta"]),
    ("matthew", &["matt", "matty"]),
    ("michael", &["mike", "mikey", "mick", "mickey"]),
    ("nathaniel", &["nate", "nat", "nathan"]),
    ("nicholas", &["nick", "nicky", "nico"]),
    ("oliver", &["ollie"]),
    ("patricia", &["pat", "patty", "trish", "tricia"]),
    ("patrick", &["pat", "paddy"]),
    ("peter", &["pete"]),
    ("philip", &["phil", "pip"]),
    ("phillip", &["phil"]),
    ("raymond", &["ray"]),
    ("rebecca", &["becky", "becca"]),
    ("richard", &["rick", "ricky", "rich", "dick", "richie"]),
    ("robert", &["bob", "bobby", "rob", "robbie", "bert"]),
    ("ronald", &["ron", "ronnie"]),
    ("samantha", &["sam", "sammy"]),
    ("samuel", &["sam", "sammy"]),
    ("stephen", &["steve", "stevie"]),
    ("steven", &["steve", "stevie"]),
    ("susan", &["sue", "susie", "suzy"]),
    ("theodore", &["ted", "teddy", "theo"]),
    ("thomas", &["tom", "tommy"]),
    ("timothy", &["tim", "timmy"]),
    ("victoria", &["vicky", "tori"]),
    ("vincent", &["vince", "vinny"]),
    ("walter", &["walt", "wally"]),
    ("william", &["bill", "billy", "will", "willy", "liam"]),
    ("zachary", &["zach", "zack"]),
];

/// The formal names `word` (folded, lower case) may stand for: itself if it is one, and every
/// formal name it is a familiar form of.
fn formal_names(word: &str) -> impl Iterator<Item = &'static str> + '_ {
    GIVEN_NAMES
        .iter()
        .filter(move |(formal, familiar)| *formal == word || familiar.contains(&word))
        .map(|(formal, _)| *formal)
}

/// Whether two different words are forms of one given name (Beth and Elizabeth, Bill and Will).
pub(crate) fn same_given_name(a: &str, b: &str) -> bool {
    a != b && formal_names(a).any(|x| formal_names(b).any(|y| x == y))
}

/// Whether every word of a name reads as pinyin: a Chinese name ("Zhang Dan" is 张丹), whose
/// words are not English familiar forms.
pub(crate) fn reads_as_pinyin(name: &NameValue) -> bool {
    name.tokens.iter().all(fold::is_pinyin_run)
}

/// Most formal readings of one name that are made into blocking keys (a familiar form of two
/// or three formal names in each of two words is already nine).
const MAX_FORMAL_READINGS: usize = 4;

/// The written forms (see `NameValue::forms`) of a name with each familiar form replaced by
/// its formal name: "Beth Johnson" gives those of "Elizabeth Johnson", "Bill Clark" and "Will
/// Clark" both those of "William Clark". Empty when the name has no familiar form or reads as
/// pinyin. Blocking keys of these forms put a name beside its formal reading.
pub(crate) fn formal_forms(name: &NameValue) -> Vec<Box<str>> {
    if reads_as_pinyin(name) {
        return Vec::new();
    }
    let mut readings: Vec<Vec<Box<str>>> = vec![Vec::new()];
    let mut replaced = false;
    for token in name.tokens.iter() {
        let formal: Vec<&str> = formal_names(token).filter(|f| *f != token).collect();
        replaced |= !formal.is_empty();
        let options: Vec<&str> = if formal.is_empty() { vec![token] } else { formal };
        readings = readings
            .into_iter()
            .flat_map(|reading| {
                options.iter().map(move |option| {
                    let mut next = reading.clone();
                    next.push((*option).into());
                    next
                })
            })
            .take(MAX_FORMAL_READINGS)
            .collect();
    }
    if !replaced {
        return Vec::new();
    }
    let mut forms: Vec<Box<str>> = readings.iter().flat_map(|tokens| name_forms(tokens)).collect();
    forms.sort();
    forms.dedup();
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn familiar_forms_meet_at_their_formal_name() {
        assert!(same_given_name("beth", "elizabeth"));
        assert!(same_given_name("elizabeth", "liz"));
        assert!(same_given_name("bill", "will"));
        assert!(same_given_name("alex", "alexandra"));
        assert!(same_given_name("dick", "richard"));
        assert!(!same_given_name("beth", "beth"));
        assert!(!same_given_name("emily", "elizabeth"));
        assert!(!same_given_name("samantha", "samuel"));
        assert!(!same_given_name("smith", "smyth"));
    }

    fn name(text: &str) -> NameValue {
        super::super::value::name_of_text(crate::matching::FieldKind::PersonName, text)
    }

    #[test]
    fn a_familiar_form_is_keyed_by_its_formal_reading() {
        let formal = name("Elizabeth Johnson");
        assert!(formal_forms(&formal).is_empty(), "no familiar form");
        let beth = formal_forms(&name("Johnson, Beth"));
        assert!(formal.forms.iter().all(|f| beth.iter().any(|b| **b == *f)), "{beth:?}");
        let (bill, will) = (formal_forms(&name("Bill Clark")), formal_forms(&name("Will Clark")));
        assert!(bill.iter().any(|f| will.contains(f)) && bill.iter().any(|f| &**f == "williamclark"), "{bill:?}");
        // Alex: Alexander or Alexandra.
        let alex = formal_forms(&name("Alex Turner"));
        assert!(["alexanderturner", "alexandraturner"].iter().all(|f| alex.iter().any(|a| &**a == *f)), "{alex:?}");
        assert!(formal_forms(&name("Zhang Dan")).is_empty(), "pinyin: 张丹");
        assert!(formal_forms(&name("张伟")).is_empty());
    }

    #[test]
    fn the_table_is_lower_case_and_has_no_repeated_formal_name() {
        let mut seen = std::collections::HashSet::new();
        for (formal, familiar) in GIVEN_NAMES {
            assert!(seen.insert(*formal), "{formal} twice");
            for w in std::iter::once(formal).chain(familiar.iter()) {
                assert!(w.bytes().all(|b| b.is_ascii_lowercase()), "{w}");
            }
        }
    }
}
