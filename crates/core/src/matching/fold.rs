//! Script folding for matching: traditional → simplified Chinese, Han characters → pinyin
//! (with a reading table for surnames whose everyday reading differs from the surname
//! reading), Latin letters without diacritics, and Double Metaphone codes for Latin words.
//!
//! The traditional → simplified table is written here from scratch (no GPL data): it covers the
//! characters that actually occur in Chinese personal names, company names and addresses, where
//! a traditional form typed by a colleague in Hong Kong or Taiwan must still match. It maps one
//! character to one character; characters whose simplification depends on the word are left
//! out on purpose (乾, 著, 藉, 瞭, 麼), because folding them wrongly would merge distinct names.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use unicode_normalization::UnicodeNormalization;

/// Traditional/simplified pairs, written as consecutive (traditional, simplified) characters.
/// Grouped by where they occur; order does not matter.
const TRADITIONAL_SIMPLIFIED_PAIRS: &str = concat!(
    // Surnames.
    "張张陳陈劉刘楊杨黃黄趙赵吳吴孫孙馬马羅罗鄭郑謝谢許许韓韩馮冯鄧邓蔣蒋葉叶蘇苏呂吕",
    "單单區区盧卢龔龚顧顾賴赖錢钱湯汤萬万賀贺龍龙鍾钟鐘钟陸陆喬乔鄒邹閻阎嚴严顏颜歐欧",
    "陽阳諸诸範范賈贾譚谭鄺邝鄔邬聶聂關关紀纪莊庄談谈藍蓝饒饶衛卫華华蕭萧溫温寧宁齊齐",
    "魯鲁韋韦鳳凤爾尔倫伦餘余塗涂費费農农勞劳鮑鲍遲迟簡简邊边閔闵賁贲暢畅項项闞阚鞏巩",
    "龐庞欒栾淩凌滿满麥麦寶宝車车貝贝婁娄東东繆缪蘭兰壽寿厲厉駱骆蒼苍遊游長长門门諶谌",
    "豐丰樂乐漢汉鄖郧滕滕",
    // Given-name characters.
    "偉伟瑋玮維维為为麗丽靜静強强軍军艷艳豔艳傑杰濤涛剛刚輝辉鵬鹏曉晓紅红凱凯瑤瑶詩诗",
    "錦锦國国聰聪穎颖瑩莹慶庆愛爱貞贞義义禮礼賢贤儀仪書书畫画夢梦嬋婵蓮莲憶忆權权譽誉",
    "繼继鋒锋銘铭嵐岚亞亚俠侠勝胜聖圣碩硕穩稳榮荣飛飞潔洁嬌娇鴻鸿鶴鹤鷹鹰鳴鸣濱滨瀟潇",
    "灝灏澤泽潤润淵渊湧涌綺绮綠绿絲丝純纯綿绵練练緣缘繡绣纖纤蕓芸藝艺蘊蕴蔭荫薈荟葦苇",
    "樺桦楓枫梔栀棟栋樹树橋桥檸柠檳槟櫻樱歡欢歲岁貴贵賓宾賽赛資资財财實实寬宽審审憲宪",
    "懷怀應应戀恋韻韵順顺頌颂頤颐顯显願愿風风颯飒馳驰駿骏驍骁鵑鹃鸞鸾齡龄嫻娴婭娅嬡嫒",
    "學学尋寻將将崢峥嶸嵘巖岩帥帅廣广彥彦悅悦愷恺憐怜戰战擁拥曄晔暉晖曆历歷历棲栖氣气",
    "濟济瀾澜煒炜燁烨爍烁琿珲璣玑環环瓊琼產产當当發发髮发盡尽確确禎祯禕祎競竞筆笔築筑",
    "篤笃紋纹紹绍統统經经緯纬縉缙總总繹绎聲声聯联肅肃興兴舉举莖茎蓋盖薩萨號号覺觉親亲",
    "觀观訓训記记設设詠咏誠诚語语誼谊諾诺謙谦謹谨護护讓让讚赞貫贯賡赓贊赞躍跃軒轩輕轻",
    "輪轮輯辑連连進进運运過过達达遠远遙遥適适選选遺遗還还邁迈鄉乡醫医釗钊鈞钧鈺钰銀银",
    "銳锐鋼钢錚铮鍵键鎮镇鏡镜鐵铁鑄铸閃闪閣阁闊阔陣阵陰阴隊队際际隨随險险雙双雛雏雞鸡",
    "離离難难雲云電电霧雾靈灵韌韧頂顶須须預预領领頻频題题額额類类飄飘飯饭館馆駒驹騰腾",
    "驕骄驛驿體体鬆松魚鱼鮮鲜鳥鸟鶯莺黨党龜龟蓮莲嬿嬿",
    // Company, trade and address words.
    "賃赁",
    "團团責责貿贸業业網网絡络數数據据軟软藥药療疗機机製制證证輸输遞递廈厦島岛灣湾匯汇",
    "滙汇億亿買买賣卖術术創创訊讯計计劃划傳传視视聽听廳厅會会師师務务諮咨詢询問问鏈链",
    "倉仓儲储貨货節节輛辆鋁铝礦矿紡纺織织裝装飾饰戲戏圖图啟启樓楼層层園园廠厂場场價价",
    "銷销員员專专營营開开盤盘貸贷幣币稅税質质檢检測测驗验協协辦办處处檔档標标準准優优",
    "線线條条碼码錄录點点擊击庫库廚厨燈灯燒烧熱热備备邏逻腦脑雜杂誌志報报飲饮麵面糧粮",
    "漁渔獸兽銅铜錫锡鍍镀釘钉針针錶表鑽钻淨净滅灭養养兌兑換换擔担債债賠赔償偿訴诉訟讼",
    "滬沪閩闽遼辽陝陕隴陇瀋沈贛赣粵粤晉晋臺台颱台縣县鎮镇衚胡衕同來来後后裡里裏里這这",
    "個个們们對对時时間间無无與与從从於于並并見见說说話话讀读寫写聞闻劇剧聲声鄰邻歸归",
    "動动兩两車车館馆廣广鐘钟橫横濕湿灑洒濃浓漿浆潛潜澗涧瀝沥爐炉牆墙狀状獨独獎奖現现",
    "瑪玛畝亩療疗癢痒盜盗監监碩硕礙碍祿禄禪禅種种稱称穀谷窮穷竊窃筍笋範范簽签籌筹紀纪",
    "約约紅红級级納纳紙纸細细組组終终結结給给絕绝綜综緊紧緒绪維维網网編编緬缅縱纵縮缩",
    "績绩織织繁繁罰罚羅罗習习聖圣聯联職职膚肤膠胶臉脸艙舱艱艰莊庄萊莱蔥葱藥药虛虚蟲虫",
    "蠶蚕衝冲補补裝装製制複复襪袜規规視视覽览觸触訂订計计討讨託托記记許许訪访評评詞词",
    "試试詩诗誇夸認认誤误說说課课調调談谈請请諸诸謀谋講讲識识譯译議议護护讀读豈岂貓猫",
    "負负財财貢贡販贩責责貨货質质購购贈赠趕赶趙赵躺躺軌轨軟软較较載载輔辅輕轻輸输轉转",
    "辦办農农邏逻遷迁鄉乡酬酬醜丑釋释鈴铃鉛铅銜衔銷销鋪铺錄录鍋锅鎖锁鏈链鑒鉴閉闭閑闲",
    "閱阅闆板闖闯陳陈陸陆階阶隱隐雖虽雜杂雞鸡雪雪韓韩頁页順顺預预頓顿頭头顧顾颶飓飼饲",
    "飽饱餅饼餐餐館馆驅驱驗验骯肮髒脏鬥斗鬧闹鹽盐麥麦黃黄齒齿",
);

/// Traditional → simplified, built once from [`TRADITIONAL_SIMPLIFIED_PAIRS`].
static TRADITIONAL_TO_SIMPLIFIED: LazyLock<HashMap<char, char>> = LazyLock::new(|| {
    let chars: Vec<char> = TRADITIONAL_SIMPLIFIED_PAIRS.chars().collect();
    chars.chunks_exact(2).filter(|pair| pair[0] != pair[1]).map(|pair| (pair[0], pair[1])).collect()
});

/// Surnames of two characters (simplified), with their pinyin. Recognising them matters both
/// for the reading (尉迟 is "yuchi", not "weichi") and for knowing where the given name starts.
const COMPOUND_SURNAMES: &[(&str, &str)] = &[
    ("欧阳", "ouyang"),
    ("司马", "sima"),
    ("诸葛", "zhuge"),
    ("上官", "shangguan"),
    ("东方", "dongfang"),
    ("慕容", "murong"),
    ("司徒", "situ"),
    ("夏侯", "xiahou"),
    ("皇甫", "huangfu"),
    ("令狐", "linghu"),
    ("尉迟", "yuchi"),
    ("万俟", "moqi"),
    ("长孙", "zhangsun"),
    ("宇文", "yuwen"),
    ("公孙", "gongsun"),
    ("轩辕", "xuanyuan"),
    ("端木", "duanmu"),
    ("独孤", "dugu"),
    ("南宫", "nangong"),
    ("西门", "ximen"),
    ("呼延", "huyan"),
    ("澹台", "tantai"),
    ("公冶", "gongye"),
    ("太史", "taishi"),
    ("申屠", "shentu"),
    ("闻人", "wenren"),
    ("赫连", "helian"),
    ("钟离", "zhongli"),
    ("濮阳", "puyang"),
    ("淳于", "chunyu"),
    ("单于", "chanyu"),
    ("拓跋", "tuoba"),
    ("百里", "baili"),
    ("东郭", "dongguo"),
    ("公羊", "gongyang"),
    ("司空", "sikong"),
    ("左丘", "zuoqiu"),
    ("第五", "diwu"),
    ("谷梁", "guliang"),
    ("乐正", "yuezheng"),
    ("仲孙", "zhongsun"),
];

/// Single-character surnames whose surname reading differs from the most common reading of the
/// character (the one a general-purpose pinyin table returns): 曾 is "zeng" as a surname but
/// "ceng" in 曾经; 单 is "shan", not "dan".
const SURNAME_READINGS: &[(char, &str)] = &[
    ('曾', "zeng"),
    ('单', "shan"),
    ('解', "xie"),
    ('区', "ou"),
    ('仇', "qiu"),
    ('朴', "piao"),
    ('查', "zha"),
    ('盖', "ge"),
    ('乐', "yue"),
    ('朝', "chao"),
    ('缪', "miao"),
    ('员', "yun"),
    ('覃', "qin"),
    ('召', "shao"),
    ('翟', "zhai"),
    ('秘', "bi"),
    ('种', "chong"),
    ('繁', "po"),
    ('黑', "he"),
    ('重', "chong"),
    ('纪', "ji"),
    ('折', "she"),
    ('隗', "wei"),
    ('句', "gou"),
    ('能', "nai"),
    ('藏', "zang"),
    ('沈', "shen"),
    ('薄', "bo"),
    ('柏', "bai"),
    ('卜', "bu"),
    ('石', "shi"),
    ('车', "che"),
    ('宿', "su"),
    ('贾', "jia"),
    ('都', "du"),
    ('阚', "kan"),
    ('冼', "xian"),
    ('洗', "xian"),
    ('燕', "yan"),
    ('曲', "qu"),
    ('臧', "zang"),
    ('祭', "zhai"),
    ('任', "ren"),
    ('华', "hua"),
    ('过', "guo"),
    ('莘', "shen"),
    ('尉', "wei"),
    ('万', "wan"),
    ('谌', "chen"),
    ('那', "na"),
    ('尹', "yin"),
    ('叶', "ye"),
];

/// Romanisations used in Hong Kong, Macau, Taiwan and the diaspora (Cantonese and Wade-Giles)
/// for common surnames, mapped to pinyin. Only spellings that are not themselves pinyin
/// syllables are listed, so that a pinyin spelling is never reinterpreted.
const ROMANISED_SURNAMES: &[(&str, &str)] = &[
    ("lee", "li"),
    ("wong", "huang"),
    ("cheung", "zhang"),
    ("tsai", "cai"),
    ("choi", "cai"),
    ("hsu", "xu"),
    ("tsui", "xu"),
    ("ng", "wu"),
    ("ho", "he"),
    ("leung", "liang"),
    ("lau", "liu"),
    ("yeung", "yang"),
    ("kwok", "guo"),
    ("chow", "zhou"),
    ("lam", "lin"),
    ("tsang", "zeng"),
    ("kwan", "guan"),
    ("fung", "feng"),
    ("tse", "xie"),
    ("hsieh", "xie"),
    ("yip", "ye"),
    ("mak", "mai"),
    ("szeto", "situ"),
    ("au", "ou"),
    ("chiang", "jiang"),
    ("tam", "tan"),
    ("chiu", "zhao"),
    ("koo", "gu"),
    ("lo", "luo"),
    ("loh", "luo"),
    ("tay", "zheng"),
    ("teo", "zhang"),
    ("goh", "wu"),
    ("lim", "lin"),
];

/// Whether `c` is a Han ideograph (unified, extensions A–G, compatibility) or 〇.
pub fn is_han(c: char) -> bool {
    matches!(
        c,
        '\u{3007}' | '\u{3400}'..='\u{4DBF}' | '\u{4E00}'..='\u{9FFF}' | '\u{F900}'..='\u{FAFF}' | '\u{20000}'..='\u{3134F}'
    )
}

/// The simplified form of one character (the character itself when the table has no entry).
pub fn simplify_char(c: char) -> char {
    TRADITIONAL_TO_SIMPLIFIED.get(&c).copied().unwrap_or(c)
}

/// Traditional → simplified folding of a whole string; other characters are kept.
pub fn to_simplified(text: &str) -> String {
    text.chars().map(simplify_char).collect()
}

/// Pinyin without tones of one Han character (ü written as "u"), or `None` for characters the
/// pinyin table does not know.
pub fn char_pinyin(c: char) -> Option<&'static str> {
    use pinyin::ToPinyin;
    let plain = simplify_char(c).to_pinyin().map(|p| p.plain())?;
    Some(match plain {
        "lü" => "lu",
        "nü" => "nu",
        "lüe" => "lue",
        "nüe" => "nue",
        other => other,
    })
}

/// The toneless pinyin syllables, as the pinyin table reads the CJK unified ideographs (ü as
/// "u"), without the vowelless interjections (m, n, ng, hm, hng).
static PINYIN_SYLLABLES: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    ('\u{4e00}'..='\u{9fff}')
        .filter_map(char_pinyin)
        .filter(|s| s.bytes().any(|b| matches!(b, b'a' | b'e' | b'i' | b'o' | b'u')))
        .collect()
});

/// The longest toneless pinyin syllable ("zhuang", "shuang").
const LONGEST_SYLLABLE: usize = 6;

/// Whether a lower-case word is pinyin written without breaks: a run of one or more syllables
/// ("chunpeng", "xian", but not "emily" or "chris").
pub fn is_pinyin_run(word: &str) -> bool {
    let bytes = word.as_bytes();
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_lowercase) {
        return false;
    }
    // ends[i]: the first i letters are whole syllables.
    let mut ends = vec![false; bytes.len() + 1];
    ends[0] = true;
    for start in 0..bytes.len() {
        if !ends[start] {
            continue;
        }
        for end in start + 1..=(start + LONGEST_SYLLABLE).min(bytes.len()) {
            if PINYIN_SYLLABLES.contains(&word[start..end]) {
                ends[end] = true;
            }
        }
    }
    ends[bytes.len()]
}

/// A name written as one run of pinyin ("Chenmei", "Ouyangxiu") read as surname and given
/// name: a compound surname's reading if the run starts with one, otherwise the longest first
/// syllable that leaves a run of pinyin. None for a single syllable or a word that is no pinyin.
pub fn split_pinyin_name(word: &str) -> Option<(&str, &str)> {
    if !is_pinyin_run(word) {
        return None;
    }
    let split = |at: usize| {
        let (surname, given) = (word.get(..at)?, word.get(at..)?);
        (!given.is_empty() && is_pinyin_run(given)).then_some((surname, given))
    };
    COMPOUND_SURNAMES
        .iter()
        .filter(|(_, reading)| word.starts_with(reading))
        .find_map(|(_, reading)| split(reading.len()))
        .or_else(|| {
            (1..=LONGEST_SYLLABLE.min(word.len()))
                .rev()
                .filter(|&at| word.get(..at).is_some_and(|first| PINYIN_SYLLABLES.contains(first)))
                .find_map(split)
        })
}

/// The length in characters of the surname at the start of a Han name (already simplified),
/// and its pinyin: a compound surname from the table, otherwise the first character.
pub fn surname_of_han_name(chars: &[char]) -> Option<(usize, String)> {
    if chars.len() >= 3 {
        let first_two: String = chars[..2].iter().collect();
        if let Some((_, reading)) = COMPOUND_SURNAMES.iter().find(|(s, _)| *s == first_two) {
            return Some((2, (*reading).to_owned()));
        }
    }
    let first = *chars.first()?;
    Some((1, surname_char_pinyin(first)?.to_owned()))
}

/// Pinyin of a one-character surname, using the surname reading table first.
pub fn surname_char_pinyin(c: char) -> Option<&'static str> {
    let c = simplify_char(c);
    SURNAME_READINGS.iter().find(|(s, _)| *s == c).map(|(_, r)| *r).or_else(|| char_pinyin(c))
}

/// Pinyin of a whole surname written in Han characters (compound or single).
pub fn surname_pinyin(surname: &str) -> Option<String> {
    let chars: Vec<char> = surname.chars().map(simplify_char).collect();
    if chars.len() == 2 {
        let joined: String = chars.iter().collect();
        if let Some((_, reading)) = COMPOUND_SURNAMES.iter().find(|(s, _)| *s == joined) {
            return Some((*reading).to_owned());
        }
    }
    let mut out = String::new();
    for (i, c) in chars.iter().enumerate() {
        let reading = if i == 0 { surname_char_pinyin(*c) } else { char_pinyin(*c) };
        out.push_str(reading?);
    }
    Some(out)
}

/// Lower-case ASCII letters and digits of a Latin word: NFKD with combining marks removed
/// ("José" → "jose", "Müller" → "muller"), other characters dropped.
pub fn fold_latin(text: &str) -> String {
    text.nfkd().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect()
}

/// A Latin name word in the spelling used for phonetic comparison: the ways ü is typed in
/// pinyin ("lv", "lyu") become "lu", and non-pinyin romanisations of common surnames (Wong,
/// Cheung, Lee) become their pinyin.
pub fn phonetic_name_word(word: &str) -> String {
    match word {
        "lv" | "lyu" => return "lu".to_owned(),
        "nv" | "nyu" => return "nu".to_owned(),
        _ => {}
    }
    if let Some((_, pinyin)) = ROMANISED_SURNAMES.iter().find(|(r, _)| *r == word) {
        return (*pinyin).to_owned();
    }
    word.to_owned()
}

/// Double Metaphone primary code of an ASCII word (empty for anything else).
pub fn double_metaphone(word: &str) -> String {
    if word.is_empty() || !word.bytes().all(|b| b.is_ascii_alphabetic()) {
        return String::new();
    }
    static ENCODER: LazyLock<rphonetic::DoubleMetaphone> = LazyLock::new(|| rphonetic::DoubleMetaphone::new(None));
    ENCODER.double_metaphone(word).primary()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinyin_runs() {
        for word in ["chunpeng", "xian", "zhuangshuang", "a", "tianyan", "lu"] {
            assert!(is_pinyin_run(word), "{word}");
        }
        for word in ["emily", "chris", "", "ng", "m", "zhang1", "Zhang", "jessica"] {
            assert!(!is_pinyin_run(word), "{word}");
        }
        assert!(PINYIN_SYLLABLES.len() > 380 && PINYIN_SYLLABLES.len() < 450, "{}", PINYIN_SYLLABLES.len());
    }

    #[test]
    fn table_is_consistent() {
        let chars: Vec<char> = TRADITIONAL_SIMPLIFIED_PAIRS.chars().collect();
        assert_eq!(chars.len() % 2, 0, "pairs must have two characters");
        let mut seen: HashMap<char, char> = HashMap::new();
        for pair in chars.chunks_exact(2) {
            assert!(is_han(pair[0]) && is_han(pair[1]), "{pair:?}");
            if let Some(previous) = seen.insert(pair[0], pair[1]) {
                assert_eq!(previous, pair[1], "{} maps to two characters", pair[0]);
            }
        }
        // Folding is idempotent: no simplified target is itself folded again.
        for (_, simplified) in seen.iter() {
            assert_eq!(simplify_char(*simplified), *simplified, "{simplified} is also a traditional key");
        }
        assert!(seen.len() > 500, "table has {} entries", seen.len());
    }

    #[test]
    fn folds_traditional_names() {
        assert_eq!(to_simplified("張偉"), "张伟");
        assert_eq!(to_simplified("歐陽娜娜"), "欧阳娜娜");
        assert_eq!(to_simplified("華為技術有限公司"), "华为技术有限公司");
        assert_eq!(to_simplified("廣州市天河區"), "广州市天河区");
        assert_eq!(to_simplified("Zhang 张"), "Zhang 张");
    }

    #[test]
    fn surname_readings() {
        let cases = [
            ("曾", "zeng"),
            ("单", "shan"),
            ("單", "shan"),
            ("解", "xie"),
            ("区", "ou"),
            ("仇", "qiu"),
            ("朴", "piao"),
            ("查", "zha"),
            ("盖", "ge"),
            ("尉迟", "yuchi"),
            ("万俟", "moqi"),
            ("欧阳", "ouyang"),
            ("歐陽", "ouyang"),
            ("张", "zhang"),
            ("吕", "lu"),
        ];
        for (surname, want) in cases {
            assert_eq!(surname_pinyin(surname).as_deref(), Some(want), "{surname}");
        }
        assert_eq!(char_pinyin('曾'), Some("ceng"), "the everyday reading stays for given names");
    }

    #[test]
    fn a_name_in_one_run_of_pinyin_splits_at_its_surname() {
        assert_eq!(split_pinyin_name("chenmei"), Some(("chen", "mei")));
        assert_eq!(split_pinyin_name("zhangxiaoming"), Some(("zhang", "xiaoming")));
        assert_eq!(split_pinyin_name("lilijun"), Some(("li", "lijun")));
        assert_eq!(split_pinyin_name("ouyangxiu"), Some(("ouyang", "xiu")));
        assert_eq!(split_pinyin_name("zhang"), None, "one syllable");
        assert_eq!(split_pinyin_name("emily"), None, "no pinyin");
    }

    #[test]
    fn compound_surname_is_recognised_only_with_a_given_name() {
        let name: Vec<char> = "欧阳娜娜".chars().collect();
        assert_eq!(surname_of_han_name(&name), Some((2, "ouyang".to_owned())));
        let name: Vec<char> = "欧阳".chars().collect();
        assert_eq!(surname_of_han_name(&name), Some((1, "ou".to_owned())));
    }

    #[test]
    fn latin_folding_and_phonetics() {
        assert_eq!(fold_latin("José"), "jose");
        assert_eq!(fold_latin("MÜLLER"), "muller");
        assert_eq!(fold_latin("O'Brien"), "obrien");
        assert_eq!(phonetic_name_word("lv"), "lu");
        assert_eq!(phonetic_name_word("wong"), "huang");
        assert_eq!(phonetic_name_word("zhang"), "zhang");
        assert_eq!(double_metaphone("carter"), double_metaphone("cartr"));
        assert_eq!(double_metaphone("smith"), double_metaphone("smyth"));
        assert_eq!(double_metaphone("张"), "");
    }
}
