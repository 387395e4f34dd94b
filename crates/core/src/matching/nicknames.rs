//! English given names and their familiar forms: "Beth Johnson" and "Elizabeth Johnson" are
//! one name written two ways, as are "Bill" and "Will" (both William). Used by the person-name
//! comparator only; blocking and the stored match keys do not read it.
//!
//! A familiar form may belong to several formal names (Alex: Alexander, Alexandra); two words
//! are the same given name when they share a formal name.

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
