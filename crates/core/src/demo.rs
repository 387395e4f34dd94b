//! Seeded, reproducible demo data: companies, contacts, leads, deals and activities that look
//! like what a Chinese-first sales team types into its CRM, including injected near-duplicates.
//! Pure: no I/O; the caller creates the records (through the normal service path) and fills the
//! reference fields listed in [`DemoRecord::refs`] with the ids it got back.
//!
//! How it stays reproducible and cheap:
//! - One ChaCha8 stream seeded from `seed` drives every choice, in record order, so the same
//!   `(total_records, seed, duplicate_share)` always yields the same [`DemoData`].
//! - The *identity* of a company or a person (city, brand, industry, surname, given name, …) is a
//!   pure hash of `(seed, object, key)`. An injected duplicate re-derives its original's identity
//!   and renders it differently (traditional characters, pinyin, a typo, another legal suffix…)
//!   without parsing strings or keeping side tables; the only state is the output itself.
//! - Strong keys (mobile, email, id_number, uscc, contract_no) are derived from the record's key
//!   through bijections, so they never collide; only duplicates tagged `demo-dup-exact` reuse
//!   their original's strong keys (in another raw spelling that normalises to the same value).

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value};

/// The objects generated, in output order.
pub const OBJECTS: [&str; 5] = ["companies", "contacts", "leads", "deals", "activities"];

/// Tag set on injected duplicates whose strong keys normalise to the original's (the service is
/// expected to refuse them as exact duplicates).
pub const TAG_DUP_EXACT: &str = "demo-dup-exact";
/// Tag set on injected duplicates whose strong keys differ from the original's or are missing
/// (only fuzzy matching can find them).
pub const TAG_DUP_FUZZY: &str = "demo-dup-fuzzy";

const COMPANIES: usize = 0;
const CONTACTS: usize = 1;
const LEADS: usize = 2;
const DEALS: usize = 3;
const ACTIVITIES: usize = 4;

/// One record to create.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoRecord {
    /// "companies" | "contacts" | "leads" | "deals" | "activities".
    pub object: &'static str,
    /// Index within its object, 0-based.
    pub key: usize,
    /// User fields as an API client would send them: raw, not normalised.
    pub fields: Map<String, Value>,
    /// Reference fields to fill later: `(field, target object, target key)`. Every target is an
    /// earlier record of [`DemoData::records`].
    pub refs: Vec<(&'static str, &'static str, usize)>,
    /// `Some(key)` when this record is an injected near-duplicate of that (original, never itself
    /// a duplicate) record of the same object.
    pub duplicate_of: Option<usize>,
}

/// Generated records, ordered by object (companies, contacts, leads, deals, activities) and by
/// key within an object, so every reference points to an earlier record.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DemoData {
    pub records: Vec<DemoRecord>,
}

impl DemoData {
    /// The records of one object (empty for an unknown object).
    pub fn of(&self, object: &str) -> &[DemoRecord] {
        let Some(rank) = OBJECTS.iter().position(|o| *o == object) else {
            return &[];
        };
        let start = self.records.partition_point(|r| object_rank(r.object) < rank);
        let end = self.records.partition_point(|r| object_rank(r.object) <= rank);
        &self.records[start..end]
    }

    /// Position in [`DemoData::records`] of `(object, key)`.
    pub fn index_of(&self, object: &str, key: usize) -> Option<usize> {
        let rank = OBJECTS.iter().position(|o| *o == object)?;
        let i = self.records.partition_point(|r| object_rank(r.object) < rank) + key;
        let r = self.records.get(i)?;
        (r.object == object && r.key == key).then_some(i)
    }
}

fn object_rank(object: &str) -> usize {
    OBJECTS.iter().position(|o| *o == object).unwrap_or(OBJECTS.len())
}

/// Records per object for `total` records, in [`OBJECTS`] order: ~15% companies, 30% contacts,
/// 15% leads, 15% deals, 25% activities; the counts sum to `total`, and there is at least one
/// company whenever `total > 0`.
pub fn object_counts(total: usize) -> [usize; 5] {
    const CUMULATIVE_PERCENT: [u128; 5] = [15, 45, 60, 75, 100];
    let n = total as u128;
    let mut out = [0usize; 5];
    let mut prev = 0u128;
    for (slot, pct) in out.iter_mut().zip(CUMULATIVE_PERCENT) {
        let boundary = (n * pct + 50) / 100;
        *slot = (boundary - prev) as usize;
        prev = boundary;
    }
    if total > 0 && out[COMPANIES] == 0 {
        let mut largest = 1;
        for i in 2..out.len() {
            if out[i] > out[largest] {
                largest = i;
            }
        }
        out[largest] -= 1;
        out[COMPANIES] = 1;
    }
    out
}

/// Generates `total_records` records from `seed`. `duplicate_share` (clamped to 0..=1, e.g. 0.05)
/// of the companies, contacts and leads are near-duplicates of an earlier record of the same
/// object; about half of them are tagged [`TAG_DUP_EXACT`], the others [`TAG_DUP_FUZZY`].
pub fn generate(total_records: usize, seed: u64, duplicate_share: f64) -> DemoData {
    let counts = object_counts(total_records);
    let mut g = Gen::new(seed, duplicate_share, counts);
    for key in 0..counts[COMPANIES] {
        let r = g.company(key);
        g.records.push(r);
    }
    for key in 0..counts[CONTACTS] {
        let r = g.contact(key);
        g.records.push(r);
    }
    for key in 0..counts[LEADS] {
        let r = g.lead(key);
        g.records.push(r);
    }
    for key in 0..counts[DEALS] {
        let r = g.deal(key);
        g.records.push(r);
    }
    for key in 0..counts[ACTIVITIES] {
        let r = g.activity(key);
        g.records.push(r);
    }
    DemoData { records: g.records }
}

// ---------------------------------------------------------------------------------------------
// Pools
// ---------------------------------------------------------------------------------------------

struct City {
    province: &'static str,
    city: &'static str,
    short: &'static str,
    trad: &'static str,
    pinyin: &'static str,
    district: &'static str,
    /// GB/T 2260 county-level code, used in USCCs and resident ids.
    region: &'static str,
    area: &'static str,
}

#[allow(clippy::too_many_arguments)] // a table row constructor
const fn city(
    province: &'static str,
    city: &'static str,
    short: &'static str,
    trad: &'static str,
    pinyin: &'static str,
    district: &'static str,
    region: &'static str,
    area: &'static str,
) -> City {
    City { province, city, short, trad, pinyin, district, region, area }
}

const CITIES: &[City] = &[
    city("浙江省", "杭州市", "杭州", "杭州", "Hangzhou", "西湖区", "330106", "0571"),
    city("北京市", "北京市", "北京", "北京", "Beijing", "东城区", "110101", "010"),
    city("北京市", "北京市", "北京", "北京", "Beijing", "海淀区", "110108", "010"),
    city("上海市", "上海市", "上海", "上海", "Shanghai", "徐汇区", "310104", "021"),
    city("上海市", "上海市", "上海", "上海", "Shanghai", "浦东新区", "310115", "021"),
    city("广东省", "深圳市", "深圳", "深圳", "Shenzhen", "南山区", "440305", "0755"),
    city("广东省", "广州市", "广州", "廣州", "Guangzhou", "天河区", "440106", "020"),
    city("江苏省", "南京市", "南京", "南京", "Nanjing", "鼓楼区", "320106", "025"),
    city("江苏省", "苏州市", "苏州", "蘇州", "Suzhou", "姑苏区", "320508", "0512"),
    city("江苏省", "无锡市", "无锡", "無錫", "Wuxi", "滨湖区", "320211", "0510"),
    city("四川省", "成都市", "成都", "成都", "Chengdu", "武侯区", "510107", "028"),
    city("湖北省", "武汉市", "武汉", "武漢", "Wuhan", "洪山区", "420111", "027"),
    city("陕西省", "西安市", "西安", "西安", "Xi'an", "雁塔区", "610113", "029"),
    city("山东省", "青岛市", "青岛", "青島", "Qingdao", "市南区", "370202", "0532"),
    city("福建省", "厦门市", "厦门", "廈門", "Xiamen", "思明区", "350203", "0592"),
    city("天津市", "天津市", "天津", "天津", "Tianjin", "和平区", "120101", "022"),
    city("重庆市", "重庆市", "重庆", "重慶", "Chongqing", "渝中区", "500103", "023"),
    city("湖南省", "长沙市", "长沙", "長沙", "Changsha", "岳麓区", "430104", "0731"),
    city("河南省", "郑州市", "郑州", "鄭州", "Zhengzhou", "金水区", "410105", "0371"),
    city("安徽省", "合肥市", "合肥", "合肥", "Hefei", "蜀山区", "340104", "0551"),
    city("辽宁省", "大连市", "大连", "大連", "Dalian", "中山区", "210202", "0411"),
    city("浙江省", "宁波市", "宁波", "寧波", "Ningbo", "鄞州区", "330212", "0574"),
    city("云南省", "昆明市", "昆明", "昆明", "Kunming", "五华区", "530102", "0871"),
];

/// Characters of Chinese brand names (字号): simplified, traditional, pinyin (no tone), and the
/// places the character may take in a brand: `L` first, `M` second, `E` third (last of a
/// three-character brand). A brand is two characters ("华信"), or three ("华信达") — since names
/// are checked per registration authority and industry, newer registrations often need a third
/// character to be accepted — and never repeats a character. Characters whose pinyin starts with
/// a vowel only come first, so that concatenated syllables stay unambiguous without apostrophes
/// ("Anxin", never "Hua'an"); every traditional form folds back to the simplified one in the
/// matcher (`matching::fold`), so traditional duplicates stay findable.
#[rustfmt::skip]
const HAN: &[(&str, &str, &str, &str)] = &[
    ("华", "華", "hua", "LME"), ("信", "信", "xin", "LME"), ("博", "博", "bo", "LME"), ("远", "遠", "yuan", "LME"),
    ("鼎", "鼎", "ding", "LME"), ("盛", "盛", "sheng", "LME"), ("恒", "恒", "heng", "LME"), ("通", "通", "tong", "LME"),
    ("嘉", "嘉", "jia", "LME"), ("禾", "禾", "he", "LME"), ("瑞", "瑞", "rui", "LME"), ("丰", "豐", "feng", "LME"),
    ("金", "金", "jin", "LM"), ("桥", "橋", "qiao", "ME"), ("中", "中", "zhong", "L"), ("科", "科", "ke", "LME"),
    ("星", "星", "xing", "LME"), ("辰", "辰", "chen", "ME"), ("海", "海", "hai", "LME"), ("川", "川", "chuan", "LME"),
    ("航", "航", "hang", "LME"), ("卓", "卓", "zhuo", "LM"), ("越", "越", "yue", "LME"), ("新", "新", "xin", "LM"),
    ("元", "元", "yuan", "LME"), ("宏", "宏", "hong", "LME"), ("达", "達", "da", "LME"), ("永", "永", "yong", "LM"),
    ("泰", "泰", "tai", "LME"), ("明", "明", "ming", "LME"), ("德", "德", "de", "LME"), ("同", "同", "tong", "LM"),
    ("舟", "舟", "zhou", "ME"), ("锦", "錦", "jin", "LME"), ("程", "程", "cheng", "ME"), ("智", "智", "zhi", "LME"),
    ("联", "聯", "lian", "LME"), ("蓝", "藍", "lan", "LM"), ("正", "正", "zheng", "LM"), ("源", "源", "yuan", "LME"),
    ("万", "萬", "wan", "LME"), ("方", "方", "fang", "LME"), ("汇", "匯", "hui", "LME"), ("启", "啟", "qi", "LM"),
    ("思", "思", "si", "LM"), ("创", "創", "chuang", "LME"), ("睿", "睿", "rui", "LME"), ("青", "青", "qing", "LM"),
    ("东", "東", "dong", "LM"), ("升", "升", "sheng", "LME"), ("长", "長", "chang", "L"), ("风", "風", "feng", "LME"),
    ("和", "和", "he", "LME"), ("银", "銀", "yin", "LM"), ("河", "河", "he", "ME"), ("凯", "凱", "kai", "LME"),
    ("九", "九", "jiu", "L"), ("百", "百", "bai", "L"), ("云", "雲", "yun", "LME"), ("图", "圖", "tu", "LME"),
    ("天", "天", "tian", "LME"), ("成", "成", "cheng", "LME"), ("宇", "宇", "yu", "LME"), ("安", "安", "an", "L"),
    ("邦", "邦", "bang", "LME"), ("宝", "寶", "bao", "LME"), ("北", "北", "bei", "L"), ("彩", "彩", "cai", "LM"),
    ("昌", "昌", "chang", "LME"), ("畅", "暢", "chang", "LM"), ("超", "超", "chao", "LM"), ("诚", "誠", "cheng", "LME"),
    ("驰", "馳", "chi", "LME"), ("崇", "崇", "chong", "L"), ("春", "春", "chun", "LM"), ("纯", "純", "chun", "LM"),
    ("大", "大", "da", "L"), ("道", "道", "dao", "LME"), ("登", "登", "deng", "LM"), ("迪", "迪", "di", "LME"),
    ("敦", "敦", "dun", "L"), ("帆", "帆", "fan", "LM"), ("飞", "飛", "fei", "LME"), ("峰", "峰", "feng", "LME"),
    ("锋", "鋒", "feng", "ME"), ("福", "福", "fu", "LME"), ("富", "富", "fu", "LME"), ("高", "高", "gao", "L"),
    ("格", "格", "ge", "LME"), ("光", "光", "guang", "LME"), ("广", "廣", "guang", "L"), ("国", "國", "guo", "LM"),
    ("浩", "浩", "hao", "LME"), ("合", "合", "he", "LM"), ("弘", "弘", "hong", "L"), ("鸿", "鴻", "hong", "LME"),
    ("虹", "虹", "hong", "LM"), ("厚", "厚", "hou", "L"), ("辉", "輝", "hui", "LME"), ("晖", "暉", "hui", "ME"),
    ("惠", "惠", "hui", "LME"), ("慧", "慧", "hui", "LM"), ("佳", "佳", "jia", "LME"), ("建", "建", "jian", "LM"),
    ("江", "江", "jiang", "LME"), ("杰", "傑", "jie", "LME"), ("精", "精", "jing", "LM"), ("景", "景", "jing", "LME"),
    ("久", "久", "jiu", "LM"), ("聚", "聚", "ju", "LM"), ("骏", "駿", "jun", "LME"), ("钧", "鈞", "jun", "LM"),
    ("开", "開", "kai", "L"), ("康", "康", "kang", "LME"), ("坤", "坤", "kun", "LME"), ("朗", "朗", "lang", "LME"),
    ("澜", "瀾", "lan", "LM"), ("力", "力", "li", "LM"), ("立", "立", "li", "LM"), ("利", "利", "li", "LME"),
    ("良", "良", "liang", "LM"), ("亮", "亮", "liang", "ME"), ("林", "林", "lin", "LME"), ("霖", "霖", "lin", "ME"),
    ("凌", "凌", "ling", "LM"), ("灵", "靈", "ling", "LM"), ("领", "領", "ling", "LM"), ("龙", "龍", "long", "LME"),
    ("隆", "隆", "long", "LME"), ("路", "路", "lu", "LME"), ("禄", "祿", "lu", "ME"), ("美", "美", "mei", "LME"),
    ("盟", "盟", "meng", "ME"), ("铭", "銘", "ming", "LME"), ("南", "南", "nan", "L"), ("楠", "楠", "nan", "ME"),
    ("宁", "寧", "ning", "LME"), ("诺", "諾", "nuo", "LME"), ("鹏", "鵬", "peng", "LME"), ("品", "品", "pin", "LM"),
    ("平", "平", "ping", "LM"), ("普", "普", "pu", "LM"), ("千", "千", "qian", "L"), ("谦", "謙", "qian", "ME"),
    ("强", "強", "qiang", "LME"), ("勤", "勤", "qin", "LM"), ("清", "清", "qing", "LM"), ("庆", "慶", "qing", "LME"),
    ("泉", "泉", "quan", "LME"), ("群", "群", "qun", "LME"), ("仁", "仁", "ren", "LM"), ("荣", "榮", "rong", "LME"),
    ("融", "融", "rong", "LME"), ("润", "潤", "run", "LME"), ("森", "森", "sen", "LME"), ("山", "山", "shan", "LME"),
    ("尚", "尚", "shang", "LM"), ("胜", "勝", "sheng", "LME"), ("世", "世", "shi", "L"), ("首", "首", "shou", "L"),
    ("曙", "曙", "shu", "L"), ("顺", "順", "shun", "LME"), ("硕", "碩", "shuo", "LME"), ("松", "松", "song", "LM"),
    ("腾", "騰", "teng", "LME"), ("拓", "拓", "tuo", "LME"), ("旺", "旺", "wang", "LME"), ("威", "威", "wei", "LME"),
    ("维", "維", "wei", "LME"), ("伟", "偉", "wei", "LME"), ("文", "文", "wen", "LM"), ("沃", "沃", "wo", "L"),
    ("希", "希", "xi", "LM"), ("熙", "熙", "xi", "LM"), ("祥", "祥", "xiang", "LME"), ("翔", "翔", "xiang", "LME"),
    ("欣", "欣", "xin", "LME"), ("鑫", "鑫", "xin", "LME"), ("兴", "興", "xing", "LME"), ("雄", "雄", "xiong", "LME"),
    ("旭", "旭", "xu", "LME"), ("轩", "軒", "xuan", "LME"), ("雅", "雅", "ya", "LM"), ("亚", "亞", "ya", "LM"),
    ("阳", "陽", "yang", "LME"), ("耀", "耀", "yao", "LME"), ("业", "業", "ye", "ME"), ("一", "一", "yi", "L"),
    ("亿", "億", "yi", "L"), ("益", "益", "yi", "LME"), ("逸", "逸", "yi", "LME"), ("毅", "毅", "yi", "M"),
    ("英", "英", "ying", "LME"), ("盈", "盈", "ying", "LME"), ("颖", "穎", "ying", "M"), ("优", "優", "you", "L"),
    ("友", "友", "you", "LME"), ("羽", "羽", "yu", "M"), ("雨", "雨", "yu", "LM"), ("玉", "玉", "yu", "LM"),
    ("裕", "裕", "yu", "LME"), ("园", "園", "yuan", "ME"), ("悦", "悅", "yue", "LME"), ("运", "運", "yun", "LME"),
    ("韵", "韻", "yun", "LM"), ("泽", "澤", "ze", "LME"), ("展", "展", "zhan", "LME"), ("兆", "兆", "zhao", "L"),
    ("哲", "哲", "zhe", "M"), ("振", "振", "zhen", "L"), ("知", "知", "zhi", "L"), ("致", "致", "zhi", "LM"),
    ("志", "志", "zhi", "LM"), ("洲", "洲", "zhou", "M"), ("紫", "紫", "zi", "L"), ("尊", "尊", "zun", "L"),
    ("昊", "昊", "hao", "LM"), ("晟", "晟", "sheng", "LME"), ("昱", "昱", "yu", "LM"), ("晶", "晶", "jing", "LM"),
    ("曜", "曜", "yao", "LM"), ("晨", "晨", "chen", "LME"), ("曦", "曦", "xi", "M"), ("泓", "泓", "hong", "LM"),
    ("沛", "沛", "pei", "M"), ("涛", "濤", "tao", "ME"), ("波", "波", "bo", "LM"), ("洋", "洋", "yang", "ME"),
    ("瀚", "瀚", "han", "LME"), ("翰", "翰", "han", "LM"), ("湾", "灣", "wan", "M"), ("港", "港", "gang", "LME"),
    ("津", "津", "jin", "M"), ("浦", "浦", "pu", "LM"), ("滨", "濱", "bin", "ME"), ("潮", "潮", "chao", "LM"),
    ("澄", "澄", "cheng", "LM"), ("渊", "淵", "yuan", "M"), ("淼", "淼", "miao", "M"), ("岳", "岳", "yue", "LM"),
    ("巍", "巍", "wei", "M"), ("峻", "峻", "jun", "M"), ("嵘", "嶸", "rong", "M"), ("磊", "磊", "lei", "M"),
    ("岩", "岩", "yan", "M"), ("桦", "樺", "hua", "M"), ("枫", "楓", "feng", "LM"), ("桂", "桂", "gui", "LM"),
    ("兰", "蘭", "lan", "LM"), ("莲", "蓮", "lian", "M"), ("芯", "芯", "xin", "LM"), ("芸", "芸", "yun", "M"),
    ("茂", "茂", "mao", "LM"), ("蔚", "蔚", "wei", "LM"), ("珠", "珠", "zhu", "LM"), ("璟", "璟", "jing", "M"),
    ("琪", "琪", "qi", "M"), ("瑶", "瑤", "yao", "M"), ("璞", "璞", "pu", "LM"), ("义", "義", "yi", "M"),
    ("忠", "忠", "zhong", "L"), ("吉", "吉", "ji", "LM"), ("亨", "亨", "heng", "LM"), ("发", "發", "fa", "ME"),
    ("巨", "巨", "ju", "L"), ("凤", "鳳", "feng", "LM"), ("麒", "麒", "qi", "L"), ("麟", "麟", "lin", "M"),
    ("环", "環", "huan", "L"), ("寰", "寰", "huan", "L"), ("纪", "紀", "ji", "LM"), ("时", "時", "shi", "L"),
    ("城", "城", "cheng", "M"), ("誉", "譽", "yu", "ME"), ("贤", "賢", "xian", "ME"), ("鸣", "鳴", "ming", "M"),
    ("潇", "瀟", "xiao", "M"), ("纬", "緯", "wei", "LM"), ("聪", "聰", "cong", "M"), ("颂", "頌", "song", "M"),
    ("颐", "頤", "yi", "LM"), ("恺", "愷", "kai", "M"), ("晔", "曄", "ye", "M"), ("炜", "煒", "wei", "M"),
    ("烨", "燁", "ye", "M"), ("祯", "禎", "zhen", "M"), ("筑", "築", "zhu", "LM"), ("遥", "遙", "yao", "M"),
    ("迈", "邁", "mai", "LM"), ("栋", "棟", "dong", "M"), ("荟", "薈", "hui", "M"), ("蕴", "蘊", "yun", "M"),
    ("涌", "湧", "yong", "M"), ("岚", "嵐", "lan", "M"), ("峥", "崢", "zheng", "LM"), ("琳", "琳", "lin", "M"),
    ("宸", "宸", "chen", "LM"), ("擎", "擎", "qing", "LM"), ("弈", "弈", "yi", "M"), ("奕", "奕", "yi", "M"),
    ("赫", "赫", "he", "LM"), ("臻", "臻", "zhen", "LM"), ("至", "至", "zhi", "L"), ("冠", "冠", "guan", "LM"),
    ("协", "協", "xie", "LM"), ("捷", "捷", "jie", "LME"), ("迅", "迅", "xun", "LM"), ("讯", "訊", "xun", "ME"),
    ("途", "途", "tu", "LM"), ("煌", "煌", "huang", "M"), ("炬", "炬", "ju", "LM"), ("晗", "晗", "han", "M"),
    ("晓", "曉", "xiao", "LM"), ("旻", "旻", "min", "M"), ("暄", "暄", "xuan", "M"), ("昕", "昕", "xin", "LM"),
    ("晴", "晴", "qing", "M"), ("晋", "晉", "jin", "LM"), ("汐", "汐", "xi", "M"), ("沁", "沁", "qin", "LM"),
    ("涵", "涵", "han", "M"), ("淳", "淳", "chun", "M"), ("湛", "湛", "zhan", "M"), ("溢", "溢", "yi", "M"),
    ("滔", "滔", "tao", "M"), ("澎", "澎", "peng", "LM"), ("灏", "灝", "hao", "M"), ("沐", "沐", "mu", "M"),
    ("浚", "浚", "jun", "M"), ("淇", "淇", "qi", "M"), ("汀", "汀", "ting", "M"), ("洪", "洪", "hong", "LM"),
    ("垚", "垚", "yao", "M"), ("域", "域", "yu", "M"), ("基", "基", "ji", "LM"), ("楷", "楷", "kai", "M"),
    ("榕", "榕", "rong", "LM"), ("樟", "樟", "zhang", "M"), ("杉", "杉", "shan", "M"), ("桐", "桐", "tong", "LM"),
    ("柯", "柯", "ke", "LM"), ("瑜", "瑜", "yu", "M"), ("瑾", "瑾", "jin", "M"), ("璇", "璇", "xuan", "M"),
    ("琦", "琦", "qi", "M"), ("瑛", "瑛", "ying", "M"), ("珂", "珂", "ke", "M"), ("玮", "瑋", "wei", "M"),
    ("珍", "珍", "zhen", "LM"), ("璐", "璐", "lu", "M"), ("礼", "禮", "li", "M"), ("跃", "躍", "yue", "LM"),
    ("奔", "奔", "ben", "LM"), ("进", "進", "jin", "M"), ("穹", "穹", "qiong", "M"), ("霄", "霄", "xiao", "M"),
    ("霆", "霆", "ting", "M"), ("特", "特", "te", "LME"), ("斯", "斯", "si", "LME"), ("莱", "萊", "lai", "LME"),
    ("菲", "菲", "fei", "LME"), ("豪", "豪", "hao", "LME"), ("俊", "俊", "jun", "LM"), ("锐", "銳", "rui", "LM"),
    ("三", "三", "san", "L"), ("五", "五", "wu", "L"), ("八", "八", "ba", "L"), ("红", "紅", "hong", "LM"),
    ("白", "白", "bai", "L"), ("丹", "丹", "dan", "LM"), ("夏", "夏", "xia", "LM"), ("穗", "穗", "sui", "LM"),
    ("堂", "堂", "tang", "M"), ("心", "心", "xin", "LM"), ("神", "神", "shen", "L"), ("太", "太", "tai", "L"),
    ("唐", "唐", "tang", "L"), ("汉", "漢", "han", "LM"), ("楚", "楚", "chu", "L"), ("蜀", "蜀", "shu", "L"),
    ("粤", "粵", "yue", "L"), ("闽", "閩", "min", "L"), ("湘", "湘", "xiang", "L"), ("浙", "浙", "zhe", "L"),
    ("苏", "蘇", "su", "L"), ("鲁", "魯", "lu", "L"), ("秦", "秦", "qin", "L"), ("豫", "豫", "yu", "L"),
    ("皖", "皖", "wan", "L"), ("渝", "渝", "yu", "L"), ("爱", "愛", "ai", "L"), ("欧", "歐", "ou", "L"),
    ("艾", "艾", "ai", "L"), ("西", "西", "xi", "L"), ("泛", "泛", "fan", "L"), ("雷", "雷", "lei", "L"),
    ("贝", "貝", "bei", "LM"), ("佰", "佰", "bai", "L"), ("家", "家", "jia", "LM"), ("民", "民", "min", "LM"),
    ("生", "生", "sheng", "ME"), ("宜", "宜", "yi", "LM"), ("怡", "怡", "yi", "LM"), ("欢", "歡", "huan", "M"),
    ("喜", "喜", "xi", "LM"), ("禧", "禧", "xi", "M"), ("健", "健", "jian", "LME"), ("工", "工", "gong", "M"),
    ("艺", "藝", "yi", "M"), ("匠", "匠", "jiang", "LM"), ("梦", "夢", "meng", "LM"), ("际", "際", "ji", "M"),
    ("宙", "宙", "zhou", "M"), ("地", "地", "di", "M"), ("煜", "煜", "yu", "M"), ("炫", "炫", "xuan", "LM"),
    ("焱", "焱", "yan", "M"), ("燊", "燊", "shen", "M"), ("竹", "竹", "zhu", "LM"), ("梅", "梅", "mei", "M"),
    ("桃", "桃", "tao", "LM"), ("橙", "橙", "cheng", "LM"), ("稻", "稻", "dao", "LM"), ("麦", "麥", "mai", "LM"),
    ("仓", "倉", "cang", "M"), ("共", "共", "gong", "LM"), ("六", "六", "liu", "L"), ("七", "七", "qi", "L"),
    ("先", "先", "xian", "LM"), ("真", "真", "zhen", "LM"), ("善", "善", "shan", "LM"), ("贵", "貴", "gui", "LM"),
    ("鹤", "鶴", "he", "M"), ("鹰", "鷹", "ying", "M"), ("燕", "燕", "yan", "L"), ("雁", "雁", "yan", "M"),
    ("虎", "虎", "hu", "M"), ("驹", "駒", "ju", "M"),
];

/// Indexes into [`HAN`] of the characters allowed at position `place` (`b'L'`, `b'M'`, `b'E'`).
const fn han_at<const N: usize>(place: u8) -> [u16; N] {
    let mut out = [0u16; N];
    let (mut i, mut n) = (0, 0);
    while i < HAN.len() {
        if has_byte(HAN[i].3, place) {
            out[n] = i as u16;
            n += 1;
        }
        i += 1;
    }
    assert!(n == N, "han_at: wrong length");
    out
}

const fn han_count(place: u8) -> usize {
    let (mut i, mut n) = (0, 0);
    while i < HAN.len() {
        if has_byte(HAN[i].3, place) {
            n += 1;
        }
        i += 1;
    }
    n
}

const fn has_byte(s: &str, b: u8) -> bool {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b {
            return true;
        }
        i += 1;
    }
    false
}

const HAN_FIRST: [u16; han_count(b'L')] = han_at(b'L');
const HAN_SECOND: [u16; han_count(b'M')] = han_at(b'M');
const HAN_THIRD: [u16; han_count(b'E')] = han_at(b'E');

/// Share (percent) of Chinese brands with three characters.
const THREE_CHAR_BRANDS_PERCENT: usize = 50;

/// Two-character sequences a brand must not contain: place names (a company "上海" registered
/// in 杭州 reads as an address), and words reserved for state-approved names.
const RESERVED_BRAND_PAIRS: &[&str] = &[
    "中国", "中华", "国家", "中央", "浙江", "江苏", "广东", "广西", "四川", "湖北", "湖南", "河北", "河南", "山东",
    "山西", "福建", "安徽", "辽宁", "吉林", "云南", "贵州", "青海", "海南", "江西", "陕西", "甘肃", "宁夏", "西藏",
    "新疆", "台湾", "香港", "澳门", "长春", "南昌", "南宁", "南通", "金华", "中山", "珠海", "九江", "大同", "大庆",
    "安庆", "安顺", "信阳", "桂林", "泰安", "泉州", "东莞", "佛山", "惠州", "兰州", "银川", "西宁", "海口", "三亚",
];

struct Industry {
    code: &'static str,
    /// Industry words in Chinese names: simplified, traditional, English.
    zh: &'static [(&'static str, &'static str, &'static str)],
    /// Industry words in English names.
    en: &'static [&'static str],
}

const INDUSTRIES: &[Industry] = &[
    Industry {
        code: "software",
        zh: &[
            ("信息科技", "信息科技", "Information Technology"),
            ("软件", "軟件", "Software"),
            ("网络科技", "網絡科技", "Network Technology"),
            ("数据科技", "數據科技", "Data Technology"),
            ("智能科技", "智能科技", "Intelligent Technology"),
            ("信息技术", "信息技術", "Information Technology"),
            ("计算机系统", "計算機系統", "Computer Systems"),
            ("数字科技", "數字科技", "Digital Technology"),
        ],
        en: &["Software", "Systems", "Data", "Digital", "Technologies", "Networks", "Labs", "Cloud"],
    },
    Industry {
        code: "manufacturing",
        zh: &[
            ("机械制造", "機械製造", "Machinery Manufacturing"),
            ("精密机械", "精密機械", "Precision Machinery"),
            ("新材料", "新材料", "New Materials"),
            ("电子", "電子", "Electronics"),
            ("汽车零部件", "汽車零部件", "Auto Parts"),
            ("智能装备", "智能裝備", "Intelligent Equipment"),
            ("自动化设备", "自動化設備", "Automation Equipment"),
            ("模具", "模具", "Moulds"),
        ],
        en: &[
            "Manufacturing",
            "Precision",
            "Industries",
            "Components",
            "Machinery",
            "Engineering",
            "Materials",
            "Automation",
        ],
    },
    Industry {
        code: "retail",
        zh: &[
            ("商贸", "商貿", "Trading"),
            ("百货", "百貨", "Department Store"),
            ("电子商务", "電子商務", "E-Commerce"),
            ("连锁超市", "連鎖超市", "Supermarket Chain"),
            ("贸易", "貿易", "Trading"),
            ("食品", "食品", "Foods"),
            ("进出口", "進出口", "Import & Export"),
        ],
        en: &["Trading", "Retail", "Commerce", "Imports", "Goods", "Brands", "Foods"],
    },
    Industry {
        code: "finance",
        zh: &[
            ("投资管理", "投資管理", "Investment Management"),
            ("融资租赁", "融資租賃", "Financial Leasing"),
            ("金融信息服务", "金融信息服務", "Financial Information Services"),
            ("资产管理", "資產管理", "Asset Management"),
            ("股权投资", "股權投資", "Equity Investment"),
            ("商业保理", "商業保理", "Commercial Factoring"),
        ],
        en: &["Capital", "Financial", "Investments", "Asset Management", "Wealth", "Advisors", "Securities"],
    },
    Industry {
        code: "healthcare",
        zh: &[
            ("医疗器械", "醫療器械", "Medical Devices"),
            ("生物科技", "生物科技", "Biotechnology"),
            ("医药", "醫藥", "Pharmaceutical"),
            ("健康管理", "健康管理", "Health Management"),
            ("医疗科技", "醫療科技", "Medical Technology"),
            ("生物医药", "生物醫藥", "Biopharmaceutical"),
        ],
        en: &["Medical", "Healthcare", "Life Sciences", "Biotech", "Pharma", "Wellness", "Diagnostics"],
    },
    Industry {
        code: "education",
        zh: &[
            ("教育科技", "教育科技", "Education Technology"),
            ("教育咨询", "教育諮詢", "Education Consulting"),
            ("职业培训", "職業培訓", "Vocational Training"),
            ("语言培训", "語言培訓", "Language Training"),
            ("艺术培训", "藝術培訓", "Art Training"),
            ("教育发展", "教育發展", "Education Development"),
        ],
        en: &["Education", "Learning", "Academy", "Training", "Institute", "Tutoring"],
    },
    Industry {
        code: "logistics",
        zh: &[
            ("物流", "物流", "Logistics"),
            ("供应链管理", "供應鏈管理", "Supply Chain Management"),
            ("国际货运代理", "國際貨運代理", "International Freight Forwarding"),
            ("仓储服务", "倉儲服務", "Warehousing"),
            ("运输", "運輸", "Transportation"),
            ("快递", "快遞", "Express Delivery"),
            ("冷链物流", "冷鏈物流", "Cold Chain Logistics"),
        ],
        en: &["Logistics", "Freight", "Supply Chain", "Shipping", "Transport", "Express", "Cargo"],
    },
    Industry {
        code: "energy",
        zh: &[
            ("新能源", "新能源", "New Energy"),
            ("能源科技", "能源科技", "Energy Technology"),
            ("电力工程", "電力工程", "Power Engineering"),
            ("光伏科技", "光伏科技", "Photovoltaic Technology"),
            ("电气", "電氣", "Electric"),
            ("储能科技", "儲能科技", "Energy Storage Technology"),
            ("节能科技", "節能科技", "Energy Saving Technology"),
        ],
        en: &["Energy", "Power", "Solar", "Renewables", "Electric", "Clean Energy", "Wind Power"],
    },
    Industry {
        code: "media",
        zh: &[
            ("文化传媒", "文化傳媒", "Culture & Media"),
            ("广告", "廣告", "Advertising"),
            ("影视制作", "影視製作", "Film & TV Production"),
            ("数字传媒", "數字傳媒", "Digital Media"),
            ("文化发展", "文化發展", "Culture Development"),
            ("网络传媒", "網絡傳媒", "Internet Media"),
            ("会展服务", "會展服務", "Exhibition Services"),
        ],
        en: &["Media", "Studios", "Advertising", "Creative", "Entertainment", "Pictures", "Communications"],
    },
    Industry {
        code: "other",
        zh: &[
            ("企业管理咨询", "企業管理諮詢", "Management Consulting"),
            ("实业", "實業", "Industrial"),
            ("建筑工程", "建築工程", "Construction Engineering"),
            ("环保科技", "環保科技", "Environmental Technology"),
            ("人力资源", "人力資源", "Human Resources"),
            ("装饰工程", "裝飾工程", "Decoration Engineering"),
            ("物业管理", "物業管理", "Property Management"),
        ],
        en: &["Consulting", "Holdings", "Partners", "Ventures", "Enterprises", "Services", "Construction"],
    },
];

/// Legal suffixes of Chinese names: simplified, traditional, English.
const ZH_SUFFIXES: &[(&str, &str, &str)] = &[
    ("有限公司", "有限公司", "Co., Ltd."),
    ("股份有限公司", "股份有限公司", "Co., Ltd."),
    ("集团有限公司", "集團有限公司", "Group Co., Ltd."),
    ("有限责任公司", "有限責任公司", "Co., Ltd."),
];

/// English brand names are a head and a tail word: "Blue Harbor", "Silver Ridge", or written as
/// one word when both are short ("Blueharbor"). Neither list holds a plural of another word or a
/// word one letter away from it, which the matcher would read as a typo of the same name.
#[rustfmt::skip]
const EN_BRAND_HEADS: &[&str] = &[
    "Blue", "Red", "Green", "Silver", "Golden", "Iron", "Stone", "Copper", "Bronze", "Steel", "Crystal", "Amber",
    "Jade", "Coral", "Ruby", "Onyx", "Pearl", "Ivory", "Scarlet", "Crimson", "Azure", "Indigo", "Cobalt", "Emerald",
    "Sapphire", "Granite", "Marble", "Slate", "Cedar", "Oak", "Pine", "Maple", "Birch", "Willow", "Elm", "Ash", "Aspen",
    "Cypress", "Laurel", "Holly", "Ivy", "Rose", "Lotus", "Lily", "Orchid", "Sage", "Fern", "Moss", "Heather",
    "Juniper", "Hazel", "Olive", "Plum", "Cherry", "Peach", "Lemon", "Mint", "Sun", "Moon", "Star", "Sky", "Cloud",
    "Rain", "Snow", "Frost", "Storm", "Thunder", "Wind", "River", "Lake", "Sea", "Ocean", "Bay", "Harbor", "Brook",
    "Creek", "Spring", "Delta", "Island", "Coast", "Shore", "Cliff", "Canyon", "Valley", "Meadow", "Prairie", "Forest",
    "Grove", "Glen", "Ridge", "Summit", "Peak", "Mountain", "Hill", "Highland", "Alpine", "Arctic", "Polar", "Desert",
    "Sierra", "Mesa", "Rock", "Sand", "Clay", "Terra", "Aqua", "Solar", "Lunar", "Stellar", "Astral", "Cosmic", "Nova",
    "Comet", "Orbit", "Aurora", "Dawn", "Dusk", "Twilight", "Morning", "Summer", "Winter", "Autumn", "North", "South",
    "East", "West", "Pacific", "Atlantic", "Orient", "Nordic", "Coastal", "Central", "Metro", "Urban", "Continental",
    "Global", "Sino", "Asia", "Cathay", "Bright", "Clear", "Deep", "High", "Grand", "Great", "Noble", "Royal", "Regal",
    "Prime", "Premier", "First", "True", "Pure", "Bold", "Brave", "Swift", "Rapid", "Quick", "Agile", "Smart", "Wise",
    "Keen", "Sharp", "Steady", "Solid", "Sure", "Safe", "Secure", "Loyal", "Honest", "Fair", "Happy", "Lucky",
    "Fortune", "Harmony", "Unity", "Liberty", "Victory", "Triumph", "Glory", "Honor", "Merit", "Valor", "Vital",
    "Vivid", "Fresh", "Young", "New", "Modern", "Future", "Next", "Silent", "Quiet", "Calm", "Gentle", "Mighty",
    "Strong", "Vast", "Wide", "Open", "Free", "Wild", "Rich", "Sterling", "Radiant", "Brilliant", "Shining", "Rising",
    "Soaring", "Flying", "Eagle", "Falcon", "Hawk", "Raven", "Crane", "Swan", "Heron", "Phoenix", "Dragon", "Tiger",
    "Lion", "Wolf", "Fox", "Bear", "Stag", "Elk", "Bison", "Mustang", "Stallion", "Panther", "Jaguar", "Lynx", "Otter",
    "Dolphin", "Whale", "Orca", "Marlin", "Osprey", "Kestrel", "Condor", "Pelican", "Robin", "Sparrow", "Lark", "Wren",
    "Finch", "Owl", "Dove", "Koi", "Panda", "Alpha", "Omega", "Sigma", "Zeta", "Vertex", "Apex", "Zenith", "Vector",
    "Matrix", "Quantum", "Fusion", "Nexus", "Axis", "Vista", "Magna", "Optima", "Ultra", "Vera", "Aria", "Lumen",
    "Orion", "Polaris", "Vega", "Atlas", "Titan", "Apollo", "Helios", "Juno", "Janus", "Athena", "Minerva", "Mercury",
    "Jupiter", "Saturn", "Neptune", "Sirius", "Rigel", "Altair", "Lyra", "Draco", "Cygnus", "Pegasus", "Hermes",
    "Zephyr", "Boreas", "Cardinal", "Monarch", "Sovereign", "Imperial", "Empire", "Crown", "King", "Queen", "Prince",
    "Knight", "Castle", "Tower", "Bridge", "Gate", "Port", "Haven", "Anchor", "Compass", "Beacon", "Lantern", "Arrow",
    "Shield", "Sword", "Spear", "Hammer", "Anvil", "Forge", "Mill", "Key", "Wheel", "Sail", "Wing", "Feather", "Leaf",
    "Tree", "Root", "Seed", "Bloom", "Blossom", "Thorn", "Vine", "Acre", "Orchard", "Fountain", "Stream", "Wave",
    "Tide", "Reef", "Dune", "Oasis", "Horizon", "Frontier", "Pioneer", "Venture", "Quest", "Journey", "Voyage",
    "Ranger", "Scout", "Pilot", "Explorer", "Spark", "Blaze", "Ember", "Flame", "Fire", "Light", "Ray", "Beam", "Prism",
    "Diamond", "Gem", "Jewel", "Core", "Edge", "Sphere", "Pulse", "Signal", "Vision", "Spirit", "Heart", "Evergreen",
    "Everest", "Kingston", "Windsor", "Oxford", "Cambridge", "Chelsea", "Richmond", "Hudson", "Jordan", "Dakota",
    "Carolina", "Georgia", "Victoria", "Regent", "Baron", "Duke", "Earl", "Lord", "Capitol", "Union", "Pilgrim",
    "Patriot", "Heritage", "Legacy", "Tradition", "Landmark", "Milestone", "Keystone", "Cornerstone", "Capstone",
    "Touchstone", "Lodestar", "Polestar", "Northstar", "Daystar", "Moonstone",
];

#[rustfmt::skip]
const EN_BRAND_TAILS: &[&str] = &[
    "Harbor", "Bay", "Bridge", "Ridge", "Field", "Wood", "Grove", "Valley", "Vale", "Dale", "Glen", "Brook", "Creek",
    "River", "Lake", "Falls", "Rock", "Stone", "Hill", "Peak", "Summit", "Point", "Crest", "Cliff", "Canyon", "Mesa",
    "Meadow", "Prairie", "Forest", "Park", "Garden", "Island", "Isle", "Coast", "Shore", "Haven", "Port", "Gate",
    "Gateway", "Way", "Path", "Trail", "Road", "Line", "Link", "Works", "Mill", "Forge", "Foundry", "Tower", "Castle",
    "Keep", "Hall", "House", "Lodge", "Manor", "Court", "Square", "Circle", "Crossing", "Landing", "Junction",
    "Station", "Dock", "Pier", "Wharf", "Anchor", "Compass", "Beacon", "Lighthouse", "Lantern", "Arch", "Pillar",
    "Crown", "Shield", "Sword", "Arrow", "Spear", "Key", "Wheel", "Sail", "Mast", "Wing", "Feather", "Leaf", "Tree",
    "Root", "Seed", "Bloom", "Blossom", "Thorn", "Vine", "Branch", "Acre", "Farm", "Ranch", "Orchard", "Vineyard",
    "Fountain", "Stream", "Current", "Wave", "Tide", "Reef", "Sands", "Dunes", "Oasis", "Horizon", "Frontier",
    "Heights", "Star", "Sun", "Moon", "Sky", "Light", "Flame", "Fire", "Spark", "Blaze", "Ember", "Glow", "Shine",
    "Ray", "Beam", "Prism", "Crystal", "Diamond", "Pearl", "Jewel", "Gem", "Core", "Edge", "Sphere", "Orbit", "Pulse",
    "Signal", "Vector", "Vertex", "Axis", "Nexus", "Matrix", "Vista", "View", "Sight", "Vision", "Scope", "Mind",
    "Spirit", "Heart", "Soul", "Quest", "Journey", "Voyage", "Venture", "Pioneer", "Ranger", "Scout", "Pilot",
    "Navigator", "Explorer", "Rider", "Runner", "Bolt", "Leap", "Stride", "Rise", "Ascent", "Flight", "Eagle", "Falcon",
    "Hawk", "Phoenix", "Dragon", "Tiger", "Lion", "Wolf", "Fox", "Bear", "Stag", "Crane", "Swan", "Heron", "Raven",
    "Owl", "Dove", "Lark", "Wren", "Panda", "Dolphin", "Whale", "Orca", "Marlin", "Oak", "Pine", "Maple", "Cedar",
    "Birch", "Willow", "Elm", "Aspen", "Cypress", "Laurel", "Lotus", "Lily", "Rose", "Orchid", "Sage", "Fern", "Ivy",
    "Holly", "Wind", "Storm", "Cloud", "Rain", "Snow", "Frost", "Thunder", "Dawn", "Dusk", "Sunrise", "Sunset",
    "Daybreak", "Twilight", "Aurora", "Comet", "Meteor", "Galaxy", "Planet", "Cove", "Inlet", "Sound", "Strait",
    "Channel", "Lagoon", "Marsh", "Moor", "Downs", "Fell", "Tor", "Knoll", "Butte", "Bluff", "Gorge", "Ravine",
    "Hollow", "Basin", "Plain", "Steppe", "Tundra", "Glacier", "Cascade", "Rapids", "Spring", "Bend", "Fork", "Ford",
    "Crossroads", "Corner", "Quay", "Mount", "Mountain", "Highlands", "Lowlands", "Terrace", "Hilltop", "Arbor",
    "Bower", "Copse", "Thicket", "Glade", "Clearing", "Grange", "Hearth", "Harvest", "Bounty", "Fortune", "Treasure",
    "Legacy", "Heritage", "Banner", "Standard", "Emblem", "Seal", "Charter", "Guild", "League", "Alliance", "Union",
    "Bond", "Trust", "Pact", "Accord", "Harmony", "Concord", "Unity", "Fusion", "Synergy", "Dynamics", "Momentum",
    "Velocity", "Element", "Photon", "Helix", "Spiral", "Loop", "Grid", "Mesh", "Fabric", "Thread", "Weave", "Loom",
    "Canvas", "Palette", "Mosaic", "Tapestry", "Origin", "Genesis", "Zenith", "Apex", "Pinnacle", "Spire", "Steeple",
    "Dome", "Vault", "Citadel", "Bastion", "Rampart", "Fortress", "Stronghold", "Outpost", "Lookout", "Watch",
    "Sentinel", "Guardian", "Warden", "Keeper", "Shepherd", "Herald", "Envoy", "Courier", "Messenger", "Harbinger",
    "Vanguard", "Skyline", "Outlook", "Prospect", "Insight", "Foresight", "Bramble", "Briar", "Juniper", "Hazel",
    "Magnolia", "Sequoia", "Spruce", "Hemlock", "Alder", "Rowan", "Linden", "Acacia", "Bamboo", "Jasmine", "Iris",
    "Violet", "Tulip", "Clover", "Thistle", "Sparrow", "Robin", "Finch", "Kestrel", "Osprey", "Condor", "Pelican",
    "Albatross", "Mustang", "Stallion", "Bison", "Lynx", "Jaguar", "Panther", "Otter", "Badger", "Beaver", "Cobalt",
    "Copper", "Granite", "Marble", "Slate", "Quartz", "Topaz", "Garnet", "Jasper", "Onyx", "Opal", "Ivory", "Sapphire",
    "Emerald", "Ruby", "Obsidian", "Basalt", "Flint", "Pebble", "Boulder", "Meridian", "Equinox", "Solstice", "Eclipse",
    "Nebula", "Quasar", "Pulsar", "Cosmos", "Zodiac",
];

const EN_SUFFIXES: &[&str] =
    &["Co., Ltd.", "Ltd.", "Inc.", "LLC", "Limited", "Group", "(China) Co., Ltd.", "Holdings Ltd."];

/// Single-character surnames: simplified, traditional, pinyin. The first 12 are drawn more often.
const SURNAMES: &[(&str, &str, &str)] = &[
    ("王", "王", "Wang"),
    ("李", "李", "Li"),
    ("张", "張", "Zhang"),
    ("刘", "劉", "Liu"),
    ("陈", "陳", "Chen"),
    ("杨", "楊", "Yang"),
    ("黄", "黃", "Huang"),
    ("赵", "趙", "Zhao"),
    ("吴", "吳", "Wu"),
    ("周", "周", "Zhou"),
    ("徐", "徐", "Xu"),
    ("孙", "孫", "Sun"),
    ("马", "馬", "Ma"),
    ("朱", "朱", "Zhu"),
    ("胡", "胡", "Hu"),
    ("郭", "郭", "Guo"),
    ("何", "何", "He"),
    ("高", "高", "Gao"),
    ("林", "林", "Lin"),
    ("罗", "羅", "Luo"),
    ("郑", "鄭", "Zheng"),
    ("梁", "梁", "Liang"),
    ("谢", "謝", "Xie"),
    ("宋", "宋", "Song"),
    ("唐", "唐", "Tang"),
    ("许", "許", "Xu"),
    ("韩", "韓", "Han"),
    ("冯", "馮", "Feng"),
    ("邓", "鄧", "Deng"),
    ("曹", "曹", "Cao"),
    ("彭", "彭", "Peng"),
    ("曾", "曾", "Zeng"),
    ("肖", "肖", "Xiao"),
    ("田", "田", "Tian"),
    ("董", "董", "Dong"),
    ("袁", "袁", "Yuan"),
    ("潘", "潘", "Pan"),
    ("蒋", "蔣", "Jiang"),
    ("蔡", "蔡", "Cai"),
    ("余", "余", "Yu"),
    ("杜", "杜", "Du"),
    ("叶", "葉", "Ye"),
    ("程", "程", "Cheng"),
    ("魏", "魏", "Wei"),
    ("苏", "蘇", "Su"),
    ("吕", "呂", "Lyu"),
    ("单", "單", "Shan"),
    ("解", "解", "Xie"),
    ("区", "區", "Ou"),
    ("仇", "仇", "Qiu"),
];

const COMPOUND_SURNAMES: &[(&str, &str, &str)] = &[
    ("欧阳", "歐陽", "Ouyang"),
    ("司马", "司馬", "Sima"),
    ("诸葛", "諸葛", "Zhuge"),
    ("上官", "上官", "Shangguan"),
    ("东方", "東方", "Dongfang"),
    ("慕容", "慕容", "Murong"),
    ("司徒", "司徒", "Situ"),
    ("夏侯", "夏侯", "Xiahou"),
    ("皇甫", "皇甫", "Huangfu"),
    ("令狐", "令狐", "Linghu"),
];

/// Given-name characters: simplified, traditional, pinyin.
const GIVEN: &[(&str, &str, &str)] = &[
    ("伟", "偉", "wei"),
    ("芳", "芳", "fang"),
    ("娜", "娜", "na"),
    ("敏", "敏", "min"),
    ("静", "靜", "jing"),
    ("丽", "麗", "li"),
    ("强", "強", "qiang"),
    ("磊", "磊", "lei"),
    ("军", "軍", "jun"),
    ("洋", "洋", "yang"),
    ("勇", "勇", "yong"),
    ("艳", "艷", "yan"),
    ("杰", "傑", "jie"),
    ("娟", "娟", "juan"),
    ("涛", "濤", "tao"),
    ("明", "明", "ming"),
    ("超", "超", "chao"),
    ("秀", "秀", "xiu"),
    ("霞", "霞", "xia"),
    ("平", "平", "ping"),
    ("刚", "剛", "gang"),
    ("桂", "桂", "gui"),
    ("英", "英", "ying"),
    ("华", "華", "hua"),
    ("建", "建", "jian"),
    ("国", "國", "guo"),
    ("文", "文", "wen"),
    ("辉", "輝", "hui"),
    ("鹏", "鵬", "peng"),
    ("浩", "浩", "hao"),
    ("宇", "宇", "yu"),
    ("欣", "欣", "xin"),
    ("怡", "怡", "yi"),
    ("婷", "婷", "ting"),
    ("晨", "晨", "chen"),
    ("子", "子", "zi"),
    ("涵", "涵", "han"),
    ("梓", "梓", "zi"),
    ("轩", "軒", "xuan"),
    ("思", "思", "si"),
    ("雨", "雨", "yu"),
    ("佳", "佳", "jia"),
    ("嘉", "嘉", "jia"),
    ("俊", "俊", "jun"),
    ("博", "博", "bo"),
    ("志", "志", "zhi"),
    ("海", "海", "hai"),
    ("晓", "曉", "xiao"),
    ("春", "春", "chun"),
    ("红", "紅", "hong"),
    ("玉", "玉", "yu"),
    ("兰", "蘭", "lan"),
    ("凯", "凱", "kai"),
    ("琳", "琳", "lin"),
    ("瑶", "瑤", "yao"),
    ("天", "天", "tian"),
    ("一", "一", "yi"),
    ("诗", "詩", "shi"),
    ("锦", "錦", "jin"),
    ("立", "立", "li"),
    ("新", "新", "xin"),
    ("东", "東", "dong"),
];

const EN_FIRST: &[&str] = &[
    "Emily", "James", "Olivia", "Michael", "Sophia", "Daniel", "Grace", "David", "Chloe", "Ryan", "Hannah", "Kevin",
    "Lily", "Jason", "Amy", "Eric", "Vivian", "Peter", "Linda", "Tony", "Jessica", "Andrew", "Rachel", "Brian",
];

const EN_LAST: &[&str] = &[
    "Carter", "Smith", "Johnson", "Brown", "Miller", "Wilson", "Taylor", "Anderson", "Thomas", "Moore", "Clark",
    "Lewis", "Walker", "Young", "King", "Wright", "Scott", "Green", "Baker", "Hall", "Mitchell", "Turner", "Campbell",
    "Parker",
];

const ZH_TITLES: &[&str] = &[
    "销售总监",
    "采购经理",
    "总经理",
    "副总经理",
    "财务总监",
    "IT经理",
    "信息部主任",
    "市场经理",
    "行政主管",
    "技术负责人",
    "运营总监",
    "产品经理",
    "董事长",
    "总裁助理",
    "项目经理",
    "采购专员",
    "人力资源经理",
    "法务经理",
    "CTO",
    "CEO",
    "CIO",
];

const EN_TITLES: &[&str] = &[
    "CTO",
    "CEO",
    "CFO",
    "Sales Director",
    "Procurement Manager",
    "Head of IT",
    "Marketing Manager",
    "Operations Director",
    "Project Manager",
    "General Manager",
    "VP Engineering",
];

/// Mobile prefixes in use (1[3-9]x).
const MOBILE_PREFIXES: &[u64] = &[
    130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 145, 147, 150, 151, 152, 153, 155, 156, 157, 158, 159, 166, 170,
    171, 173, 175, 176, 177, 178, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 191, 193, 195, 196, 198, 199,
];

const PUBLIC_MAIL_DOMAINS: &[(&str, u32)] = &[
    ("qq.com", 30),
    ("163.com", 20),
    ("126.com", 10),
    ("sina.com", 5),
    ("foxmail.com", 5),
    ("139.com", 5),
    ("gmail.com", 10),
    ("outlook.com", 10),
    ("hotmail.com", 5),
];

const ROADS: &[&str] = &[
    "人民路",
    "中山路",
    "解放路",
    "建设路",
    "文三路",
    "学院路",
    "新华路",
    "和平路",
    "东风路",
    "长江路",
    "黄河路",
    "科技路",
    "创新大道",
    "高新大道",
    "滨江路",
    "延安路",
    "迎宾大道",
    "青年路",
];

const BUILDINGS: &[&str] =
    &["国际大厦", "科技大厦", "创业大厦", "金融中心", "国贸中心B座", "软件园3号楼", "中心广场A座", "时代广场"];

const ESTATES: &[&str] = &[
    "阳光花园",
    "锦绣家园",
    "滨江花城",
    "翠苑小区",
    "紫荆华庭",
    "金色家园",
    "和平里小区",
    "幸福里",
    "书香苑",
    "春晓苑",
];

const COMPANY_TAGS: &[&str] =
    &["重点客户", "KA", "战略合作", "续约", "新签", "渠道", "上市公司", "高新技术企业", "2026目标客户"];
const CONTACT_TAGS: &[&str] = &["决策人", "VIP", "技术对接", "老客户", "展会结识", "key-contact", "影响者"];
const LEAD_TAGS: &[&str] = &["2026春季展会", "官网注册", "老客户推荐", "webinar", "百度推广"];
const DEAL_TAGS: &[&str] = &["新签", "续约", "增购", "competitive", "框架协议"];

const PRODUCTS: &[(&str, &str)] = &[
    ("CRM年度订阅", "Annual CRM Subscription"),
    ("私有化部署", "On-premise Deployment"),
    ("数据平台建设", "Data Platform"),
    ("年度维保", "Annual Maintenance"),
    ("设备采购", "Equipment Purchase"),
    ("系统集成项目", "System Integration"),
    ("咨询服务", "Consulting Services"),
    ("培训服务", "Training Services"),
    ("二期扩容", "Phase II Expansion"),
    ("SaaS续费", "SaaS Renewal"),
    ("定制开发", "Custom Development"),
    ("云资源采购", "Cloud Resources"),
];

struct ActivityKind {
    kind: &'static str,
    weight: u32,
    zh: &'static [&'static str],
    en: &'static [&'static str],
}

const ACTIVITY_KINDS: &[ActivityKind] = &[
    ActivityKind {
        kind: "call",
        weight: 30,
        zh: &["电话沟通需求", "电话回访", "确认报价细节", "催款电话"],
        en: &["Follow-up call", "Intro call", "Pricing call"],
    },
    ActivityKind {
        kind: "meeting",
        weight: 15,
        zh: &["方案评审会", "季度业务回顾", "需求调研会议", "合同谈判"],
        en: &["Kick-off meeting", "Quarterly business review", "Solution workshop"],
    },
    ActivityKind {
        kind: "email",
        weight: 20,
        zh: &["发送报价单", "发送合同草稿", "发送产品资料", "邮件确认会议纪要"],
        en: &["Sent proposal", "Pricing follow-up", "Sent meeting minutes"],
    },
    ActivityKind {
        kind: "visit",
        weight: 10,
        zh: &["上门拜访", "现场演示", "实地考察", "节日拜访"],
        en: &["On-site demo", "Customer visit"],
    },
    ActivityKind {
        kind: "note",
        weight: 15,
        zh: &["客户反馈记录", "竞品情况备注", "决策链梳理", "预算情况"],
        en: &["Meeting notes", "Internal note", "Competitor notes"],
    },
    ActivityKind {
        kind: "task",
        weight: 10,
        zh: &["准备合同草稿", "整理需求清单", "安排技术交流", "申请特价审批"],
        en: &["Prepare quote", "Send NDA", "Book demo"],
    },
];

const ZH_BODIES: &[&str] = &[
    "与{name}沟通了采购计划，对方预计下月启动招标。",
    "{name}对报价有疑问，需要补充折扣说明。",
    "已向{name}发送最新版方案，等待反馈。",
    "{name}希望安排一次现场演示，时间待定。",
    "{name}反馈系统集成需求较多，需技术团队评估。",
    "跟进{name}的续约事宜，客户整体满意度较高。",
    "{name}的预算已批复，下周进入商务谈判。",
    "{name}提到竞品报价更低，需准备差异化说明。",
];

const EN_BODIES: &[&str] = &[
    "Discussed the renewal timeline with {name}; decision expected next month.",
    "{name} asked for a revised quote with a volume discount.",
    "Shared the latest proposal with {name}, awaiting feedback.",
    "{name} wants an on-site demo for the IT team.",
    "Budget for {name} is approved; legal review starts next week.",
];

const LEAD_SOURCES: &[(&str, u32)] =
    &[("web", 30), ("referral", 20), ("event", 15), ("cold_call", 15), ("partner", 12), ("other", 8)];

const ZH_DEAL_BODIES: &[&str] = &[
    "{name}：客户确认了需求范围，下周提交正式报价。",
    "{name}进入商务谈判阶段，客户希望再优惠5%。",
    "{name}：技术评估已通过，等待客户采购流程。",
    "{name}的合同草稿已发给对方法务审核。",
    "{name}：客户预算推迟到下季度，保持跟进。",
];

const EN_DEAL_BODIES: &[&str] = &[
    "{name}: scope confirmed, formal quote due next week.",
    "{name}: customer asked for another 5% discount.",
    "{name}: technical evaluation passed, waiting for procurement.",
    "{name}: contract draft sent to their legal team.",
];

const FULL_WIDTH_DIGITS: [char; 10] = ['０', '１', '２', '３', '４', '５', '６', '７', '８', '９'];

// ---------------------------------------------------------------------------------------------
// Identities: pure functions of (seed, salt, key)
// ---------------------------------------------------------------------------------------------

const SALT_COMPANY: u64 = 0x636f_6d70_616e_7931;
const SALT_CONTACT: u64 = 0x636f_6e74_6163_7431;
const SALT_LEAD_PERSON: u64 = 0x6c65_6164_7065_7231;
const SALT_LEAD_COMPANY: u64 = 0x6c65_6164_636f_6d31;
const SALT_SOURCE: u64 = 0x736f_7572_6365_3031;

/// SplitMix64: a tiny hash-based stream for identities that must be re-derivable from a key.
struct Mix(u64);

impl Mix {
    fn new(seed: u64, salt: u64, key: usize) -> Self {
        let mut m = Mix(seed ^ salt);
        let first = m.next();
        Mix(first ^ (key as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n == 0`).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

/// The channel a company or contact record came in through (`source`), for three records in
/// four, weighted like the leads'. Drawn from its own stream (not the generator's), so the
/// rest of the data is what it was before companies and contacts had a source.
fn entry_source(seed: u64, salt: u64, key: usize) -> Option<&'static str> {
    let mut m = Mix::new(seed, SALT_SOURCE ^ salt, key);
    if m.below(4) == 0 {
        return None;
    }
    let total: u32 = LEAD_SOURCES.iter().map(|(_, w)| w).sum();
    Some(weighted_at(LEAD_SOURCES, m.below(total as usize) as u32))
}

/// The item of `xs` at draw `r` (in `0..` the sum of the weights); the last one past the end.
fn weighted_at<T: Copy>(xs: &[(T, u32)], mut r: u32) -> T {
    for &(x, w) in xs {
        if r < w {
            return x;
        }
        r -= w;
    }
    xs[xs.len() - 1].0
}

#[derive(Clone, Copy)]
struct CompanyParts {
    english: bool,
    city: usize,
    industry: usize,
    /// Chinese: indexes into HAN of the brand's characters (the first `brand_len` of them);
    /// English: indexes into EN_BRAND_HEADS and EN_BRAND_TAILS.
    brand: [u16; 3],
    brand_len: u8,
    /// English brand written as one word ("Blueharbor" rather than "Blue Harbor").
    joined: bool,
    /// Index into the industry's `zh` or `en` words.
    word: usize,
    /// Index into ZH_SUFFIXES or EN_SUFFIXES.
    suffix: usize,
    /// Chinese layout: 0 city first, 1 city in parentheses after the brand, 2 no city.
    layout: u8,
    /// Full-width parentheses in layout 1.
    wide: bool,
    /// Website host style.
    web: u8,
}

fn company_parts(seed: u64, salt: u64, key: usize) -> CompanyParts {
    let mut m = Mix::new(seed, salt, key);
    let english = m.below(100) < 25;
    let city = m.below(CITIES.len());
    let industry = m.below(INDUSTRIES.len());
    let ind = &INDUSTRIES[industry];
    let (brand, brand_len, joined, word, suffix) = if english {
        let (brand, joined) = english_brand(&mut m);
        (brand, 2, joined, m.below(ind.en.len()), m.below(EN_SUFFIXES.len()))
    } else {
        let s = m.below(100);
        let suffix = match s {
            0..65 => 0,
            65..80 => 1,
            80..88 => 2,
            _ => 3,
        };
        let (brand, len) = han_brand(&mut m);
        (brand, len, false, m.below(ind.zh.len()), suffix)
    };
    let l = m.below(100);
    let layout = match l {
        0..60 => 0,
        60..85 => 1,
        _ => 2,
    };
    let wide = m.below(2) == 0;
    let web = m.below(5) as u8;
    CompanyParts { english, city, industry, brand, brand_len, joined, word, suffix, layout, wide, web }
}

/// A Chinese brand: its characters' indexes into HAN and their number (2 or 3).
fn han_brand(m: &mut Mix) -> ([u16; 3], u8) {
    let len = if m.below(100) < THREE_CHAR_BRANDS_PERCENT { 3 } else { 2 };
    let first = HAN_FIRST[m.below(HAN_FIRST.len())];
    let second = pick_han(m, &HAN_SECOND, |c| c != first && !reserved_pair(first, c));
    let third =
        if len == 3 { pick_han(m, &HAN_THIRD, |c| c != first && c != second && !reserved_pair(second, c)) } else { 0 };
    ([first, second, third], len)
}

/// A uniform pick from `table`; when the pick is not `allowed`, the next allowed entry.
fn pick_han(m: &mut Mix, table: &[u16], allowed: impl Fn(u16) -> bool) -> u16 {
    let start = m.below(table.len());
    (0..table.len()).map(|i| table[(start + i) % table.len()]).find(|&c| allowed(c)).unwrap_or(table[start])
}

/// Whether two characters in a row would spell a reserved word or a place name.
fn reserved_pair(a: u16, b: u16) -> bool {
    if !HAN_STARTS_RESERVED[usize::from(a)] {
        return false;
    }
    let (a, b) = (HAN[usize::from(a)].0, HAN[usize::from(b)].0);
    RESERVED_BRAND_PAIRS
        .iter()
        .copied()
        .chain(CITIES.iter().map(|c| c.short))
        .any(|w| w.len() == a.len() + b.len() && w.starts_with(a) && w.ends_with(b))
}

/// Which characters of HAN begin a reserved word or a city's short name: for the others (most),
/// [`reserved_pair`] need not look at the lists.
const HAN_STARTS_RESERVED: [bool; HAN.len()] = {
    let mut out = [false; HAN.len()];
    let mut i = 0;
    while i < HAN.len() {
        let c = HAN[i].0.as_bytes();
        let mut j = 0;
        while j < RESERVED_BRAND_PAIRS.len() + CITIES.len() {
            let w = if j < RESERVED_BRAND_PAIRS.len() {
                RESERVED_BRAND_PAIRS[j].as_bytes()
            } else {
                CITIES[j - RESERVED_BRAND_PAIRS.len()].short.as_bytes()
            };
            let mut k = 0;
            while k < c.len() && k < w.len() && c[k] == w[k] {
                k += 1;
            }
            if k == c.len() {
                out[i] = true;
            }
            j += 1;
        }
        i += 1;
    }
    out
};

/// An English brand: indexes of its head and tail words, and whether it is written as one word.
fn english_brand(m: &mut Mix) -> ([u16; 3], bool) {
    let head = m.below(EN_BRAND_HEADS.len());
    let mut tail = m.below(EN_BRAND_TAILS.len());
    if EN_BRAND_TAILS[tail] == EN_BRAND_HEADS[head] {
        tail = (tail + 1) % EN_BRAND_TAILS.len();
    }
    // Short words make a plausible compound ("Redwood", "Blueharbor"); long ones stay apart.
    let short = EN_BRAND_HEADS[head].len() <= 5 && EN_BRAND_TAILS[tail].len() <= 6;
    let joined = short && m.below(100) < 40;
    ([head as u16, tail as u16, 0], joined)
}

impl CompanyParts {
    /// The (simplified, traditional, pinyin, places) rows of a Chinese brand's characters.
    fn han(&self) -> impl Iterator<Item = &'static (&'static str, &'static str, &'static str, &'static str)> + '_ {
        self.brand[..usize::from(self.brand_len)].iter().map(|&i| &HAN[usize::from(i)])
    }

    /// The brand as written: simplified characters ("华信达") or English ("Blue Harbor").
    fn brand(&self) -> String {
        if self.english { self.english_brand() } else { self.han().map(|c| c.0).collect() }
    }

    fn brand_traditional(&self) -> String {
        self.han().map(|c| c.1).collect()
    }

    /// Pinyin of a Chinese brand: syllables run together, first letter capitalised ("Huaxinda").
    fn brand_pinyin(&self) -> String {
        capitalise(&self.han().map(|c| c.2).collect::<String>())
    }

    fn english_words(&self) -> (&'static str, &'static str) {
        (EN_BRAND_HEADS[usize::from(self.brand[0])], EN_BRAND_TAILS[usize::from(self.brand[1])])
    }

    fn english_brand(&self) -> String {
        let (head, tail) = self.english_words();
        if self.joined { format!("{head}{}", tail.to_ascii_lowercase()) } else { format!("{head} {tail}") }
    }

    /// The English brand with a typing error in one of its words (the longer one).
    fn english_brand_typo(&self, rng: &mut ChaCha8Rng) -> String {
        let (head, tail) = self.english_words();
        if self.joined {
            typo(&self.english_brand(), rng)
        } else if tail.len() >= head.len() {
            format!("{head} {}", typo(tail, rng))
        } else {
            format!("{} {tail}", typo(head, rng))
        }
    }
}

/// Host of the company's website and work e-mail: the brand's letters (pinyin for a Chinese
/// brand), lower-case.
fn company_host(p: &CompanyParts) -> String {
    let base: String = if p.english {
        let (head, tail) = p.english_words();
        format!("{head}{tail}").to_ascii_lowercase()
    } else {
        p.han().map(|c| c.2).collect()
    };
    match p.web {
        0 => format!("{base}.com"),
        1 if INDUSTRIES[p.industry].code == "software" => format!("{base}tech.com"),
        1 => format!("{base}-group.com"),
        2 => format!("{base}.com.cn"),
        3 => format!("{base}.cn"),
        _ => {
            let city: String = CITIES[p.city].pinyin.chars().filter(char::is_ascii_alphabetic).collect();
            format!("{}{base}.com", city.to_ascii_lowercase())
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CoVariant {
    Original,
    NoSuffix,
    AltSuffix,
    CityParen,
    NoCity,
    NoIndustry,
    Traditional,
    Pinyin,
    Spaced,
    Typo,
    Upper,
    Lower,
    NoPunct,
}

const ZH_CO_VARIANTS: &[(CoVariant, u32)] = &[
    (CoVariant::NoSuffix, 14),
    (CoVariant::AltSuffix, 10),
    (CoVariant::CityParen, 14),
    (CoVariant::NoCity, 10),
    (CoVariant::NoIndustry, 6),
    (CoVariant::Traditional, 14),
    (CoVariant::Pinyin, 12),
    (CoVariant::Spaced, 8),
];

const EN_CO_VARIANTS: &[(CoVariant, u32)] = &[
    (CoVariant::Typo, 35),
    (CoVariant::AltSuffix, 20),
    (CoVariant::NoSuffix, 15),
    (CoVariant::Upper, 10),
    (CoVariant::Lower, 5),
    (CoVariant::NoPunct, 15),
];

/// Renders a company name. Only `Typo` and `AltSuffix` of English names consume `rng`, so the
/// `Original` rendering is a pure function of the parts.
fn company_name(p: &CompanyParts, v: CoVariant, rng: &mut ChaCha8Rng) -> String {
    let ind = &INDUSTRIES[p.industry];
    if p.english {
        let word = p.english_brand();
        let iw = ind.en[p.word];
        let suffix = EN_SUFFIXES[p.suffix];
        let original = format!("{word} {iw} {suffix}");
        return match v {
            CoVariant::Typo => format!("{} {iw} {suffix}", p.english_brand_typo(rng)),
            CoVariant::AltSuffix => {
                let other = (p.suffix + 1 + rng.random_range(0..EN_SUFFIXES.len() - 1)) % EN_SUFFIXES.len();
                format!("{word} {iw} {}", EN_SUFFIXES[other])
            }
            CoVariant::NoSuffix => format!("{word} {iw}"),
            CoVariant::Upper => original.to_uppercase(),
            CoVariant::Lower => original.to_lowercase(),
            CoVariant::NoPunct => original.replace([',', '.'], ""),
            _ => original,
        };
    }
    let city = &CITIES[p.city];
    let (word_s, word_t, word_en) = ind.zh[p.word];
    let (suffix_s, suffix_t, suffix_en) = ZH_SUFFIXES[p.suffix];
    if v == CoVariant::Pinyin {
        let brand_py = p.brand_pinyin();
        return match p.layout {
            0 => format!("{} {brand_py} {word_en} {suffix_en}", city.pinyin),
            1 => format!("{brand_py} ({}) {word_en} {suffix_en}", city.pinyin),
            _ => format!("{brand_py} {word_en} {suffix_en}"),
        };
    }
    let trad = v == CoVariant::Traditional;
    let city_name = if trad { city.trad } else { city.short };
    let brand = if trad { p.brand_traditional() } else { p.brand() };
    let brand = brand.as_str();
    let layout = match v {
        CoVariant::CityParen if p.layout == 1 => 0,
        CoVariant::CityParen => 1,
        CoVariant::NoCity => 2,
        _ => p.layout,
    };
    let industry = match v {
        CoVariant::NoIndustry => "",
        _ if trad => word_t,
        _ => word_s,
    };
    let suffix = match v {
        CoVariant::NoSuffix => "",
        CoVariant::AltSuffix => match p.suffix {
            0 => "有限责任公司",
            _ => "有限公司",
        },
        _ if trad => suffix_t,
        _ => suffix_s,
    };
    let (lp, rp) = if p.wide { ("（", "）") } else { ("(", ")") };
    let head = match layout {
        0 => format!("{city_name}{brand}"),
        1 => format!("{brand}{lp}{city_name}{rp}"),
        _ => brand.to_owned(),
    };
    if v == CoVariant::Spaced {
        let mut parts: Vec<&str> = Vec::with_capacity(4);
        if layout == 0 {
            parts.extend([city_name, brand]);
        } else {
            parts.push(&head);
        }
        parts.extend([industry, suffix].into_iter().filter(|s| !s.is_empty()));
        return parts.join(" ");
    }
    format!("{head}{industry}{suffix}")
}

#[derive(Clone, Copy)]
struct PersonParts {
    /// 0 Chinese name, 1 English name, 2 English given name + Chinese surname ("Kevin Wang").
    kind: u8,
    compound: bool,
    surname: usize,
    given: [usize; 2],
    given_len: usize,
    first: usize,
    last: usize,
}

fn person_parts(seed: u64, salt: u64, key: usize) -> PersonParts {
    let mut m = Mix::new(seed, salt, key);
    let r = m.below(100);
    let kind = match r {
        0..75 => 0,
        75..90 => 1,
        _ => 2,
    };
    let compound = m.below(100) < 5;
    let surname = if compound {
        m.below(COMPOUND_SURNAMES.len())
    } else if m.below(2) == 0 {
        m.below(12)
    } else {
        m.below(SURNAMES.len())
    };
    let given_len = if m.below(100) < 35 { 1 } else { 2 };
    let given = [m.below(GIVEN.len()), m.below(GIVEN.len())];
    let first = m.below(EN_FIRST.len());
    let last = m.below(EN_LAST.len());
    PersonParts { kind, compound, surname, given, given_len, first, last }
}

impl PersonParts {
    fn surname(&self) -> (&'static str, &'static str, &'static str) {
        if self.compound { COMPOUND_SURNAMES[self.surname] } else { SURNAMES[self.surname] }
    }

    fn given(&self) -> impl Iterator<Item = (&'static str, &'static str, &'static str)> + '_ {
        self.given[..self.given_len].iter().map(|&i| GIVEN[i])
    }

    /// (first, last) of a Latin-written name.
    fn latin(&self) -> (String, String) {
        match self.kind {
            1 => (EN_FIRST[self.first].to_owned(), EN_LAST[self.last].to_owned()),
            2 => (EN_FIRST[self.first].to_owned(), self.surname().2.to_owned()),
            _ => {
                let given: String = self.given().map(|g| g.2).collect();
                (capitalise(&given), self.surname().2.to_owned())
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PVariant {
    Original,
    Spaced,
    Traditional,
    Pinyin,
    PinyinReversed,
    PinyinUpper,
    Typo,
    Lower,
    Upper,
    Reversed,
    Comma,
    Initial,
}

const ZH_PERSON_VARIANTS: &[(PVariant, u32)] = &[
    (PVariant::Spaced, 30),
    (PVariant::Traditional, 20),
    (PVariant::Pinyin, 25),
    (PVariant::PinyinReversed, 15),
    (PVariant::PinyinUpper, 10),
];

const LATIN_PERSON_VARIANTS: &[(PVariant, u32)] = &[
    (PVariant::Typo, 40),
    (PVariant::Lower, 10),
    (PVariant::Upper, 10),
    (PVariant::Reversed, 15),
    (PVariant::Comma, 10),
    (PVariant::Initial, 15),
];

/// Renders a person name; only `Typo` consumes `rng`.
fn person_name(p: &PersonParts, v: PVariant, rng: &mut ChaCha8Rng) -> String {
    if p.kind == 0 {
        let (s, st, _) = p.surname();
        match v {
            PVariant::Original => {
                return format!("{s}{}", p.given().map(|g| g.0).collect::<String>());
            }
            PVariant::Spaced => {
                return format!("{s} {}", p.given().map(|g| g.0).collect::<String>());
            }
            PVariant::Traditional => {
                return format!("{st}{}", p.given().map(|g| g.1).collect::<String>());
            }
            PVariant::Pinyin | PVariant::PinyinReversed | PVariant::PinyinUpper => {
                let (first, last) = p.latin();
                return match v {
                    PVariant::Pinyin => format!("{last} {first}"),
                    PVariant::PinyinReversed => format!("{first} {last}"),
                    _ => format!("{} {first}", last.to_uppercase()),
                };
            }
            _ => {}
        }
    }
    let (first, last) = p.latin();
    match v {
        PVariant::Typo => {
            if rng.random_bool(0.5) {
                format!("{} {last}", typo(&first, rng))
            } else {
                format!("{first} {}", typo(&last, rng))
            }
        }
        PVariant::Lower => format!("{first} {last}").to_lowercase(),
        PVariant::Upper => format!("{first} {}", last.to_uppercase()),
        PVariant::Reversed => format!("{last} {first}"),
        PVariant::Comma => format!("{last}, {first}"),
        PVariant::Initial => format!("{}. {last}", first.chars().next().unwrap_or('X')),
        _ => format!("{first} {last}"),
    }
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A realistic typing error in a Latin word: swapped, dropped, doubled or wrong vowel.
fn typo(word: &str, rng: &mut ChaCha8Rng) -> String {
    let mut cs: Vec<char> = word.chars().collect();
    let n = cs.len();
    if n < 3 {
        let last = cs.last().copied();
        cs.extend(last);
        return cs.into_iter().collect();
    }
    match rng.random_range(0..4u8) {
        0 => {
            let i = rng.random_range(1..n - 1);
            cs.swap(i, i + 1);
        }
        1 => {
            let i = rng.random_range(1..n);
            cs.remove(i);
        }
        2 => {
            let i = rng.random_range(1..n);
            let c = cs[i];
            cs.insert(i, c);
        }
        _ => {
            const VOWELS: [char; 5] = ['a', 'e', 'i', 'o', 'u'];
            let positions: Vec<usize> = (1..n).filter(|&i| VOWELS.contains(&cs[i])).collect();
            if positions.is_empty() {
                let c = cs[n - 1];
                cs.push(c);
            } else {
                let i = positions[rng.random_range(0..positions.len())];
                let others: Vec<char> = VOWELS.iter().copied().filter(|v| *v != cs[i]).collect();
                cs[i] = others[rng.random_range(0..others.len())];
            }
        }
    }
    cs.into_iter().collect()
}

// ---------------------------------------------------------------------------------------------
// Strong keys and checksums
// ---------------------------------------------------------------------------------------------

/// Primes (Knuth's and xxHash's constants) larger than every prime factor of the moduli used, so
/// `x -> (x * A + B) mod m` is a bijection of `0..m`; one per key space so that a record's mobile,
/// e-mail number, id number and organisation code don't share digits.
const PERM_PRIMES: [u128; 5] = [2_654_435_761, 2_246_822_519, 3_266_489_917, 668_265_263, 374_761_393];
const SPACE_MOBILE: usize = 0;
const SPACE_RESIDENT_ID: usize = 1;
const SPACE_ORG_CODE: usize = 2;
const SPACE_EMAIL: usize = 3;
const SPACE_QQ: usize = 4;

/// A bijection of `0..m` chosen by `(seed, space)`.
fn permute(seed: u64, space: usize, x: u64, m: u64) -> u64 {
    if m == 0 {
        return 0;
    }
    let offset = Mix::new(seed, 0x7065_726d_7574_6530, space).next();
    let a = PERM_PRIMES[space % PERM_PRIMES.len()];
    ((u128::from(x) * a + u128::from(offset)) % u128::from(m)) as u64
}

const HUNDRED_MILLION: u64 = 100_000_000;

/// The 11-digit mobile number of strong-key sequence `seq` (unique for seq < 45 × 10^8).
fn mobile_number(seed: u64, seq: u64) -> u64 {
    let space = MOBILE_PREFIXES.len() as u64 * HUNDRED_MILLION;
    let idx = permute(seed, SPACE_MOBILE, seq, space);
    let prefix = MOBILE_PREFIXES[(idx / HUNDRED_MILLION) as usize % MOBILE_PREFIXES.len()];
    prefix * HUNDRED_MILLION + idx % HUNDRED_MILLION
}

/// Raw spellings of a mobile number: 0 plain, 1 "138 1234 5678", 2 "138-1234-5678",
/// 3 "+86 138 1234 5678", 4 "+8613812345678", 5 "+86-138-1234-5678", 6 full-width digits,
/// 7 "0086 138 1234 5678", 8 "+86 13812345678".
fn format_mobile(number: u64, style: u8) -> String {
    let s = number.to_string();
    let (a, b, c) = (&s[..3], &s[3..7], &s[7..]);
    match style {
        1 => format!("{a} {b} {c}"),
        2 => format!("{a}-{b}-{c}"),
        3 => format!("+86 {a} {b} {c}"),
        4 => format!("+86{s}"),
        5 => format!("+86-{a}-{b}-{c}"),
        6 => s.bytes().map(|d| FULL_WIDTH_DIGITS[usize::from(d - b'0') % 10]).collect(),
        7 => format!("0086 {a} {b} {c}"),
        8 => format!("+86 {s}"),
        _ => s,
    }
}

const MOBILE_STYLES: &[(u8, u32)] = &[(0, 55), (1, 15), (2, 10), (3, 7), (4, 6), (5, 4), (8, 3)];

const RESIDENT_ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const RESIDENT_ID_CHECK: &[u8; 11] = b"10X98765432";

/// GB 11643 check character of the first 17 digits.
fn resident_id_check(first17: &[u8]) -> u8 {
    let sum: u32 = first17.iter().zip(RESIDENT_ID_WEIGHTS).map(|(d, w)| u32::from(d.wrapping_sub(b'0') % 10) * w).sum();
    RESIDENT_ID_CHECK[(sum % 11) as usize]
}

const BIRTH_FIRST_DAY: i64 = days_from_civil(1960, 1, 1);
const BIRTH_DAYS: u64 = (days_from_civil(2003, 1, 1) - BIRTH_FIRST_DAY) as u64;

/// Resident id number and birth date (YYYY-MM-DD) of strong-key sequence `seq`; unique for
/// seq < regions × birth days × 1000 (about 3.6 × 10^8).
fn resident_id(seed: u64, seq: u64) -> (String, String) {
    let regions = CITIES.len() as u64;
    let idx = permute(seed, SPACE_RESIDENT_ID, seq, regions * BIRTH_DAYS * 1000);
    let region = CITIES[(idx % regions) as usize].region;
    let rest = idx / regions;
    let (y, m, d) = civil_from_days(BIRTH_FIRST_DAY + (rest % BIRTH_DAYS) as i64);
    let serial = rest / BIRTH_DAYS;
    let mut id = format!("{region}{y:04}{m:02}{d:02}{serial:03}");
    let check = resident_id_check(id.as_bytes());
    id.push(char::from(check));
    (id, format!("{y:04}-{m:02}-{d:02}"))
}

const USCC_CHARSET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
const USCC_WEIGHTS: [u32; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];

/// GB 32100 check character of the first 17 characters.
fn uscc_check(first17: &[u8]) -> u8 {
    let sum: u32 = first17
        .iter()
        .zip(USCC_WEIGHTS)
        .map(|(c, w)| USCC_CHARSET.iter().position(|x| x == c).unwrap_or(0) as u32 * w)
        .sum();
    USCC_CHARSET[((31 - sum % 31) % 31) as usize]
}

/// GB 11714 organisation-code check character of 8 digits.
fn org_code_check(first8: &[u8]) -> u8 {
    const W: [u32; 8] = [3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = first8.iter().zip(W).map(|(d, w)| u32::from(d.wrapping_sub(b'0') % 10) * w).sum();
    match 11 - sum % 11 {
        10 => b'X',
        11 => b'0',
        c => b'0' + c as u8,
    }
}

/// USCC of company sequence `seq` (unique for seq < 10^8): registration authority + category,
/// the city's region code, a GB 11714 organisation code and the GB 32100 check character.
fn uscc(seed: u64, seq: u64, p: &CompanyParts, institution: bool) -> String {
    let head = if institution { "12" } else { "91" };
    let org = format!("{:08}", permute(seed, SPACE_ORG_CODE, seq, HUNDRED_MILLION));
    let mut code = format!("{head}{}{org}", CITIES[p.city].region);
    code.push(char::from(org_code_check(org.as_bytes())));
    let check = uscc_check(code.as_bytes());
    code.push(char::from(check));
    code
}

// ---------------------------------------------------------------------------------------------
// Calendar (proleptic Gregorian, days since 1970-01-01)
// ---------------------------------------------------------------------------------------------

const fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

const fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn format_date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// RFC 3339 UTC datetime from minutes since the epoch.
fn format_datetime(minutes: i64) -> String {
    let (y, m, d) = civil_from_days(minutes.div_euclid(1440));
    let min = minutes.rem_euclid(1440);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:00Z", min / 60, min % 60)
}

const CLOSE_FIRST_DAY: i64 = days_from_civil(2026, 1, 1);
const CLOSE_DAYS: usize = (days_from_civil(2028, 1, 1) - CLOSE_FIRST_DAY) as usize;
/// Activities before this day are history, after it plans.
const ACTIVITY_SPLIT_DAY: i64 = days_from_civil(2026, 7, 1);

// ---------------------------------------------------------------------------------------------
// Generator
// ---------------------------------------------------------------------------------------------

struct Gen {
    rng: ChaCha8Rng,
    seed: u64,
    share: f64,
    counts: [usize; 5],
    starts: [usize; 5],
    /// Power of ten (≥ 1000) covering every person's strong-key sequence: numbers in e-mails.
    email_space: u64,
    records: Vec<DemoRecord>,
}

fn put(fields: &mut Map<String, Value>, name: &str, value: impl Into<Value>) {
    fields.insert(name.to_owned(), value.into());
}

/// Fields collected before building the map, so the map is allocated at its exact size: at a
/// million records the output's memory (and the page faults to get it) dominates the run time.
struct Fields(Vec<(&'static str, Value)>);

impl Fields {
    fn with_capacity(n: usize) -> Self {
        Fields(Vec::with_capacity(n))
    }

    fn put(&mut self, name: &'static str, value: impl Into<Value>) {
        self.0.push((name, value.into()));
    }

    fn into_map(self) -> Map<String, Value> {
        let mut map = Map::with_capacity(self.0.len());
        for (name, value) in self.0 {
            map.insert(name.to_owned(), value);
        }
        map
    }
}

impl Gen {
    fn new(seed: u64, share: f64, counts: [usize; 5]) -> Self {
        let mut starts = [0; 5];
        let mut total = 0;
        for (start, count) in starts.iter_mut().zip(counts) {
            *start = total;
            total += count;
        }
        let people = (counts[CONTACTS] + counts[LEADS]) as u64;
        let mut email_space = 1000u64;
        while email_space < people {
            match email_space.checked_mul(10) {
                Some(s) => email_space = s,
                None => break,
            }
        }
        let share = if share.is_nan() { 0.0 } else { share.clamp(0.0, 1.0) };
        Gen {
            rng: ChaCha8Rng::seed_from_u64(seed),
            seed,
            share,
            counts,
            starts,
            email_space,
            records: Vec::with_capacity(total),
        }
    }

    // --- small helpers ---------------------------------------------------------------------

    fn rec(&self, obj: usize, key: usize) -> &DemoRecord {
        &self.records[self.starts[obj] + key]
    }

    fn root(&self, obj: usize, key: usize) -> usize {
        self.rec(obj, key).duplicate_of.unwrap_or(key)
    }

    fn field(&self, obj: usize, key: usize, name: &str) -> Option<Value> {
        self.rec(obj, key).fields.get(name).cloned()
    }

    fn field_str(&self, obj: usize, key: usize, name: &str) -> Option<String> {
        self.rec(obj, key).fields.get(name).and_then(Value::as_str).map(str::to_owned)
    }

    /// Uniform in `0..n` (0 when `n <= 1`).
    fn below(&mut self, n: usize) -> usize {
        if n <= 1 { 0 } else { self.rng.random_range(0..n) }
    }

    fn pct(&mut self, p: u32) -> bool {
        self.rng.random_range(0..100u32) < p
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    fn weighted<T: Copy>(&mut self, xs: &[(T, u32)]) -> T {
        let total: u32 = xs.iter().map(|x| x.1).sum();
        weighted_at(xs, self.rng.random_range(0..total.max(1)))
    }

    fn tags(&mut self, pool: &[&str], p_any: u32) -> Value {
        if !self.pct(p_any) {
            return Value::Array(Vec::new());
        }
        let first = self.below(pool.len());
        let mut out = vec![Value::from(pool[first])];
        if self.pct(35) {
            let second = (first + 1 + self.below(pool.len() - 1)) % pool.len();
            out.push(Value::from(pool[second]));
        }
        Value::Array(out)
    }

    fn dup_tag(exact: bool) -> Value {
        Value::Array(vec![Value::from(if exact { TAG_DUP_EXACT } else { TAG_DUP_FUZZY })])
    }

    /// Decides whether record `key` of `obj` is an injected duplicate: `Some((original, exact))`.
    fn pick_duplicate(&mut self, obj: usize, key: usize) -> Option<(usize, bool)> {
        if key == 0 || self.share <= 0.0 || !self.rng.random_bool(self.share) {
            return None;
        }
        let exact = self.rng.random_bool(0.5);
        let candidate = self.below(key);
        let mut root = self.root(obj, candidate);
        if exact && obj == COMPANIES {
            // An exact company duplicate needs an original with a USCC.
            for _ in 0..8 {
                if self.rec(obj, root).fields.contains_key("uscc") {
                    break;
                }
                let candidate = self.below(key);
                root = self.root(obj, candidate);
            }
        }
        Some((root, exact))
    }

    fn mobile_original(&mut self, seq: u64) -> String {
        let style = self.weighted(MOBILE_STYLES);
        format_mobile(mobile_number(self.seed, seq), style)
    }

    /// Another raw spelling of the same number.
    fn mobile_variant(&mut self, number: u64, original: &str) -> String {
        for _ in 0..4 {
            let style = self.pick(&[1u8, 2, 3, 5, 6, 7]);
            let s = format_mobile(number, style);
            if s != original {
                return s;
            }
        }
        format_mobile(number, 6)
    }

    /// The same address with an upper-cased domain or padding; it normalises to the original.
    fn email_variant(&mut self, original: &str) -> String {
        let Some((local, domain)) = original.trim().split_once('@') else {
            return original.to_owned();
        };
        match self.below(3) {
            0 => format!("{local}@{}", domain.to_uppercase()),
            1 => {
                let capitalised: Vec<String> = domain.split('.').map(capitalise).collect();
                let d = capitalised.join(".");
                if d == domain { format!("{local}@{}", domain.to_uppercase()) } else { format!("{local}@{d}") }
            }
            _ => format!(" {local}@{} ", domain.to_uppercase()),
        }
    }

    fn email(&mut self, p: &PersonParts, seq: u64, work_host: Option<String>) -> String {
        let domain = match work_host {
            Some(host) if self.pct(55) => host,
            _ => self.weighted(PUBLIC_MAIL_DOMAINS).to_owned(),
        };
        if domain == "qq.com" && self.pct(60) {
            // A QQ number; numeric local parts never collide with the lettered ones below.
            return format!("{}@qq.com", HUNDRED_MILLION + permute(self.seed, SPACE_QQ, seq, HUNDRED_MILLION));
        }
        let u = permute(self.seed, SPACE_EMAIL, seq, self.email_space);
        let (first, last) = p.latin();
        let (first, last) = (first.to_ascii_lowercase(), last.to_ascii_lowercase());
        // Every lettered local part ends with a letter before `u`, so `u` (unique per person)
        // can be read back from the address: no two people share one.
        let local = if p.kind == 0 {
            let initials: String = p.given().filter_map(|g| g.2.chars().next()).collect();
            match self.below(5) {
                0 => format!("{last}{first}{u}"),
                1 => format!("{first}.{last}{u}"),
                2 => format!("{last}.{first}{u}"),
                3 => format!("{last}{initials}{u}"),
                _ => format!("{last}_{first}{u}"),
            }
        } else {
            let initial = first.chars().next().unwrap_or('x');
            match self.below(4) {
                0 => format!("{first}.{last}{u}"),
                1 => format!("{initial}{last}{u}"),
                2 => format!("{first}{u}"),
                _ => format!("{first}_{last}{u}"),
            }
        };
        format!("{local}@{domain}")
    }

    /// A WeChat ID. Each names one account, so two people never share one: the chosen forms
    /// end in digits of the person's own (unique) mobile number where a name and a number
    /// alone would repeat among a million contacts (zhangwei6681, Wei_1985).
    fn wechat(&mut self, p: &PersonParts, mobile: u64) -> String {
        match self.below(10) {
            0..3 => {
                const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
                let tail: String = (0..14).map(|_| char::from(self.pick(ALNUM))).collect();
                format!("wxid_{tail}")
            }
            3..7 => {
                let (first, last) = p.latin();
                let n = self.rng.random_range(10..10_000u32);
                format!("{}{}{n}_{:06}", last.to_ascii_lowercase(), first.to_ascii_lowercase(), mobile % 1_000_000)
            }
            7..9 => mobile.to_string(),
            _ => {
                let (first, _) = p.latin();
                let n = self.rng.random_range(1970..2005u32);
                format!("{first}_{n}_{:06}", mobile % 1_000_000)
            }
        }
    }

    fn street(&mut self) -> String {
        let road = self.pick(ROADS);
        let no = self.rng.random_range(1..1000u32);
        format!("{road}{no}号")
    }

    fn place(city: &City) -> String {
        if city.province == city.city {
            format!("{}{}", city.city, city.district)
        } else {
            format!("{}{}{}", city.province, city.city, city.district)
        }
    }

    fn company_address(&mut self, city: &City) -> String {
        let street = self.street();
        let place = Self::place(city);
        if self.pct(60) {
            let building = self.pick(BUILDINGS);
            let floor = self.rng.random_range(2..40u32);
            format!("{place}{street}{building}{floor}层")
        } else {
            let block = self.rng.random_range(1..12u32);
            let room = self.rng.random_range(1..8u32) * 100 + self.rng.random_range(1..20u32);
            format!("{place}{street}{block}幢{room}室")
        }
    }

    fn home_address(&mut self, city: &City) -> String {
        let street = self.street();
        let estate = self.pick(ESTATES);
        let block = self.rng.random_range(1..30u32);
        let unit = self.rng.random_range(1..5u32);
        let room = self.rng.random_range(1..33u32) * 100 + self.rng.random_range(1..5u32);
        format!("{}{street}{estate}{block}幢{unit}单元{room}室", Self::place(city))
    }

    fn landline(&mut self, city: &City) -> String {
        let first = self.rng.random_range(2..9u32);
        let mut rest = self.rng.random_range(0..10_000_000u32);
        // 400… and 800… are service numbers, not fixed lines: a phone validator refuses them.
        if (first == 4 || first == 8) && rest < 100_000 {
            rest += 100_000;
        }
        let n = format!("{first}{rest:07}");
        let (a, b) = (&n[..4], &n[4..]);
        let area = city.area;
        match self.below(10) {
            0..4 => format!("{area}-{a} {b}"),
            4..7 => format!("{area}-{n}"),
            7 => format!("({area}) {a}-{b}"),
            8 => format!("+86 {} {a} {b}", &area[1..]),
            _ => format!("{area} {n}"),
        }
    }

    fn website(&mut self, p: &CompanyParts) -> String {
        let scheme = if self.pct(80) { "https" } else { "http" };
        let www = if self.pct(70) { "www." } else { "" };
        format!("{scheme}://{www}{}", company_host(p))
    }

    fn company_variant(&mut self, p: &CompanyParts, original: &str) -> String {
        for _ in 0..6 {
            let v = if p.english { self.weighted(EN_CO_VARIANTS) } else { self.weighted(ZH_CO_VARIANTS) };
            let s = company_name(p, v, &mut self.rng);
            if s != original {
                return s;
            }
        }
        company_name(p, CoVariant::NoSuffix, &mut self.rng)
    }

    fn person_variant(&mut self, p: &PersonParts, original: &str) -> String {
        for _ in 0..6 {
            let v = if p.kind == 0 { self.weighted(ZH_PERSON_VARIANTS) } else { self.weighted(LATIN_PERSON_VARIANTS) };
            let s = person_name(p, v, &mut self.rng);
            if s != original {
                return s;
            }
        }
        let v = if p.kind == 0 { PVariant::Spaced } else { PVariant::Comma };
        person_name(p, v, &mut self.rng)
    }

    // --- companies ---------------------------------------------------------------------------

    fn company(&mut self, key: usize) -> DemoRecord {
        match self.pick_duplicate(COMPANIES, key) {
            Some((root, exact)) => self.company_dup(key, root, exact),
            None => self.company_original(key),
        }
    }

    fn company_original(&mut self, key: usize) -> DemoRecord {
        let p = company_parts(self.seed, SALT_COMPANY, key);
        let city = &CITIES[p.city];
        let industry = INDUSTRIES[p.industry].code;
        let mut f = Fields::with_capacity(10);
        f.put("name", company_name(&p, CoVariant::Original, &mut self.rng));
        if self.pct(80) {
            let institution = matches!(industry, "healthcare" | "education") && self.pct(20);
            f.put("uscc", uscc(self.seed, key as u64, &p, institution));
        }
        f.put("industry", industry);
        f.put("province", city.province);
        f.put("city", city.city);
        if self.pct(85) {
            let a = self.company_address(city);
            f.put("address", a);
        }
        if self.pct(50) {
            let w = self.website(&p);
            f.put("website", w);
        }
        if self.pct(85) {
            let phone = self.landline(city);
            f.put("phone", phone);
        }
        let status = self.weighted(&[("prospect", 40), ("active", 35), ("inactive", 15), ("archived", 10)]);
        f.put("status", status);
        if let Some(source) = entry_source(self.seed, SALT_COMPANY, key) {
            f.put("source", source);
        }
        let tags = self.tags(COMPANY_TAGS, 60);
        f.put("tags", tags);
        DemoRecord { object: OBJECTS[COMPANIES], key, fields: f.into_map(), refs: Vec::new(), duplicate_of: None }
    }

    fn company_dup(&mut self, key: usize, root: usize, want_exact: bool) -> DemoRecord {
        let p = company_parts(self.seed, SALT_COMPANY, root);
        let original_name = self.field_str(COMPANIES, root, "name").unwrap_or_default();
        let mut f = Fields::with_capacity(10);
        let name = self.company_variant(&p, &original_name);
        f.put("name", name);
        let mut exact = false;
        if want_exact && let Some(code) = self.field(COMPANIES, root, "uscc") {
            f.put("uscc", code);
            exact = true;
        } else if self.pct(25) {
            f.put("uscc", uscc(self.seed, key as u64, &p, false));
        }
        for name in ["industry", "province", "city"] {
            if self.pct(90)
                && let Some(v) = self.field(COMPANIES, root, name)
            {
                f.put(name, v);
            }
        }
        for (name, p_copy) in [("address", 40), ("website", 50), ("phone", 40)] {
            if self.pct(p_copy)
                && let Some(v) = self.field(COMPANIES, root, name)
            {
                f.put(name, v);
            }
        }
        f.put("status", "prospect");
        // Entered again, often through another channel.
        if let Some(source) = entry_source(self.seed, SALT_COMPANY, key) {
            f.put("source", source);
        }
        f.put("tags", Self::dup_tag(exact));
        DemoRecord { object: OBJECTS[COMPANIES], key, fields: f.into_map(), refs: Vec::new(), duplicate_of: Some(root) }
    }

    // --- contacts ----------------------------------------------------------------------------

    fn contact(&mut self, key: usize) -> DemoRecord {
        match self.pick_duplicate(CONTACTS, key) {
            Some((root, exact)) => self.contact_dup(key, root, exact),
            None => self.contact_original(key),
        }
    }

    fn contact_original(&mut self, key: usize) -> DemoRecord {
        let p = person_parts(self.seed, SALT_CONTACT, key);
        let mut refs = Vec::new();
        let mut company = None;
        if self.pct(92) {
            let c = self.below(self.counts[COMPANIES]);
            refs.push(("company_id", OBJECTS[COMPANIES], c));
            company = Some(company_parts(self.seed, SALT_COMPANY, self.root(COMPANIES, c)));
        }
        let mut f = Fields::with_capacity(9);
        f.put("name", person_name(&p, PVariant::Original, &mut self.rng));
        let title = if p.kind != 0 {
            self.pick(EN_TITLES)
        } else if self.pct(90) {
            self.pick(ZH_TITLES)
        } else {
            self.pick(EN_TITLES)
        };
        f.put("title", title);
        let mobile = self.mobile_original(key as u64);
        f.put("mobile", mobile);
        if self.pct(80) {
            let e = self.email(&p, key as u64, company.as_ref().map(company_host));
            f.put("email", e);
        }
        let mut birth = None;
        if self.pct(30) {
            let (id, b) = resident_id(self.seed, key as u64);
            f.put("id_number", id);
            birth = Some(b);
        }
        if self.pct(40) {
            let w = self.wechat(&p, mobile_number(self.seed, key as u64));
            f.put("wechat", w);
        }
        if birth.is_none() && self.pct(25) {
            let day = BIRTH_FIRST_DAY + self.below(BIRTH_DAYS as usize) as i64;
            birth = Some(format_date(day));
        }
        if let Some(b) = birth {
            f.put("birth_date", b);
        }
        if self.pct(50) {
            let city = match company {
                Some(c) if self.pct(70) => &CITIES[c.city],
                _ => &CITIES[self.below(CITIES.len())],
            };
            let a = self.home_address(city);
            f.put("address", a);
        }
        if let Some(source) = entry_source(self.seed, SALT_CONTACT, key) {
            f.put("source", source);
        }
        let tags = self.tags(CONTACT_TAGS, 35);
        f.put("tags", tags);
        DemoRecord { object: OBJECTS[CONTACTS], key, fields: f.into_map(), refs, duplicate_of: None }
    }

    fn contact_dup(&mut self, key: usize, root: usize, exact: bool) -> DemoRecord {
        let p = person_parts(self.seed, SALT_CONTACT, root);
        let original_name = self.field_str(CONTACTS, root, "name").unwrap_or_default();
        let refs = if self.pct(85) { self.rec(CONTACTS, root).refs.clone() } else { Vec::new() };
        let mut f = Fields::with_capacity(9);
        let name = self.person_variant(&p, &original_name);
        f.put("name", name);
        if self.pct(70)
            && let Some(t) = self.field(CONTACTS, root, "title")
        {
            f.put("title", t);
        }
        if exact {
            let original = self.field_str(CONTACTS, root, "mobile").unwrap_or_default();
            let m = self.mobile_variant(mobile_number(self.seed, root as u64), &original);
            f.put("mobile", m);
            if let Some(e) = self.field_str(CONTACTS, root, "email") {
                let e = self.email_variant(&e);
                f.put("email", e);
            }
            if let Some(id) = self.field_str(CONTACTS, root, "id_number") {
                let id = if id.ends_with('X') && self.pct(60) { id.to_lowercase() } else { id };
                f.put("id_number", id);
            }
        } else {
            // A second phone; a private e-mail or none; no id number.
            let m = self.mobile_original(key as u64);
            f.put("mobile", m);
            if self.pct(50) {
                let e = self.email(&p, key as u64, None);
                f.put("email", e);
            }
        }
        if self.pct(50)
            && let Some(w) = self.field(CONTACTS, root, "wechat")
        {
            f.put("wechat", w);
        }
        if let Some(b) = self.field(CONTACTS, root, "birth_date") {
            f.put("birth_date", b);
        }
        if self.pct(30)
            && let Some(a) = self.field(CONTACTS, root, "address")
        {
            f.put("address", a);
        }
        if let Some(source) = entry_source(self.seed, SALT_CONTACT, key) {
            f.put("source", source);
        }
        f.put("tags", Self::dup_tag(exact));
        DemoRecord { object: OBJECTS[CONTACTS], key, fields: f.into_map(), refs, duplicate_of: Some(root) }
    }

    // --- leads -------------------------------------------------------------------------------

    fn lead(&mut self, key: usize) -> DemoRecord {
        match self.pick_duplicate(LEADS, key) {
            Some((root, exact)) => self.lead_dup(key, root, exact),
            None => self.lead_original(key),
        }
    }

    fn lead_seq(&self, key: usize) -> u64 {
        (self.counts[CONTACTS] + key) as u64
    }

    fn lead_original(&mut self, key: usize) -> DemoRecord {
        let p = person_parts(self.seed, SALT_LEAD_PERSON, key);
        let cp = company_parts(self.seed, SALT_LEAD_COMPANY, key);
        let seq = self.lead_seq(key);
        let mut f = Fields::with_capacity(7);
        f.put("name", person_name(&p, PVariant::Original, &mut self.rng));
        let has_company = self.pct(90);
        if has_company {
            f.put("company_name", company_name(&cp, CoVariant::Original, &mut self.rng));
        }
        let m = self.mobile_original(seq);
        f.put("mobile", m);
        if self.pct(70) {
            let host = has_company.then(|| company_host(&cp));
            let e = self.email(&p, seq, host);
            f.put("email", e);
        }
        let source = self.weighted(LEAD_SOURCES);
        f.put("source", source);
        let status =
            self.weighted(&[("new", 30), ("working", 25), ("qualified", 20), ("disqualified", 15), ("converted", 10)]);
        f.put("status", status);
        let tags = self.tags(LEAD_TAGS, 20);
        f.put("tags", tags);
        DemoRecord { object: OBJECTS[LEADS], key, fields: f.into_map(), refs: Vec::new(), duplicate_of: None }
    }

    fn lead_dup(&mut self, key: usize, root: usize, exact: bool) -> DemoRecord {
        let p = person_parts(self.seed, SALT_LEAD_PERSON, root);
        let cp = company_parts(self.seed, SALT_LEAD_COMPANY, root);
        let original_name = self.field_str(LEADS, root, "name").unwrap_or_default();
        let mut f = Fields::with_capacity(7);
        let name = self.person_variant(&p, &original_name);
        f.put("name", name);
        if let Some(company) = self.field_str(LEADS, root, "company_name") {
            match self.below(20) {
                0..12 => {
                    let v = self.company_variant(&cp, &company);
                    f.put("company_name", v);
                }
                12..17 => f.put("company_name", company),
                _ => {}
            }
        }
        if exact {
            let original = self.field_str(LEADS, root, "mobile").unwrap_or_default();
            let m = self.mobile_variant(mobile_number(self.seed, self.lead_seq(root)), &original);
            f.put("mobile", m);
            if let Some(e) = self.field_str(LEADS, root, "email") {
                let e = self.email_variant(&e);
                f.put("email", e);
            }
        } else {
            let seq = self.lead_seq(key);
            let m = self.mobile_original(seq);
            f.put("mobile", m);
            if self.pct(40) {
                let e = self.email(&p, seq, None);
                f.put("email", e);
            }
        }
        let source = self.weighted(LEAD_SOURCES);
        f.put("source", source);
        f.put("status", "new");
        f.put("tags", Self::dup_tag(exact));
        DemoRecord { object: OBJECTS[LEADS], key, fields: f.into_map(), refs: Vec::new(), duplicate_of: Some(root) }
    }

    // --- deals -------------------------------------------------------------------------------

    fn deal(&mut self, key: usize) -> DemoRecord {
        let mut contact = None;
        let mut company = None;
        if self.counts[CONTACTS] > 0 && self.pct(70) {
            let ck = self.below(self.counts[CONTACTS]);
            contact = Some(ck);
            company = self.rec(CONTACTS, ck).refs.iter().find(|r| r.0 == "company_id").map(|r| r.2);
        }
        let company = match company {
            Some(c) => c,
            None => self.below(self.counts[COMPANIES]),
        };
        let mut refs = vec![("company_id", OBJECTS[COMPANIES], company)];
        if let Some(ck) = contact {
            refs.push(("contact_id", OBJECTS[CONTACTS], ck));
        }
        let cp = company_parts(self.seed, SALT_COMPANY, self.root(COMPANIES, company));
        // Deals are named after the company's brand.
        let short = cp.brand();
        let (product_zh, product_en) = self.pick(PRODUCTS);
        let year = if self.pct(60) { 2026 } else { 2027 };
        let name = if cp.english {
            format!("{short} - {product_en}")
        } else if self.pct(70) {
            format!("{short}-{product_zh}")
        } else {
            format!("{short}{year}年{product_zh}")
        };
        let mut f = Fields::with_capacity(6);
        f.put("name", name);
        let amount = self.amount();
        f.put("amount", amount);
        let stage = self.weighted(&[
            ("qualification", 20),
            ("needs_analysis", 20),
            ("proposal", 18),
            ("negotiation", 14),
            ("won", 16),
            ("lost", 12),
        ]);
        f.put("stage", stage);
        if self.pct(90) {
            let day = CLOSE_FIRST_DAY + self.below(CLOSE_DAYS) as i64;
            f.put("expected_close_date", format_date(day));
        }
        // A won deal always has its contract number (a default rule requires it).
        let p_contract = match stage {
            "won" => 100,
            "negotiation" => 80,
            _ => 23,
        };
        if self.pct(p_contract) {
            let contract_year = if self.pct(70) { 2026 } else { 2025 };
            f.put("contract_no", format!("HT-{contract_year}-{:06}", key + 1));
        }
        let tags = self.tags(DEAL_TAGS, 15);
        f.put("tags", tags);
        DemoRecord { object: OBJECTS[DEALS], key, fields: f.into_map(), refs, duplicate_of: None }
    }

    /// `{"amount": "123456.00", "currency": "CNY"}`; integer arithmetic only.
    fn amount(&mut self) -> Value {
        let exp = self.weighted(&[(3u32, 10), (4, 35), (5, 40), (6, 15)]);
        let lo = 10u64.pow(exp);
        let mut yuan = self.rng.random_range(lo..lo * 10);
        let mut cents = 0;
        match self.below(100) {
            0..60 => yuan = yuan / 1000 * 1000,
            60..85 => yuan = yuan / 100 * 100,
            _ => cents = self.below(100),
        }
        let currency = if self.pct(10) {
            yuan = (yuan / 7).max(1);
            "USD"
        } else {
            "CNY"
        };
        let mut m = Map::with_capacity(2);
        put(&mut m, "amount", format!("{yuan}.{cents:02}"));
        put(&mut m, "currency", currency);
        Value::Object(m)
    }

    // --- activities --------------------------------------------------------------------------

    fn activity(&mut self, key: usize) -> DemoRecord {
        let weights = [
            (COMPANIES, if self.counts[COMPANIES] > 0 { 35 } else { 0 }),
            (CONTACTS, if self.counts[CONTACTS] > 0 { 35 } else { 0 }),
            (DEALS, if self.counts[DEALS] > 0 { 30 } else { 0 }),
        ];
        let obj = self.weighted(&weights);
        let target = self.below(self.counts[obj]);
        // The related record's name as the team knows it (for a duplicate company or contact:
        // its original's). Re-derived rather than read where possible: random reads into a
        // million maps are a noticeable part of the run time.
        let name = match obj {
            COMPANIES => {
                let parts = company_parts(self.seed, SALT_COMPANY, self.root(COMPANIES, target));
                company_name(&parts, CoVariant::Original, &mut self.rng)
            }
            CONTACTS => {
                let parts = person_parts(self.seed, SALT_CONTACT, self.root(CONTACTS, target));
                person_name(&parts, PVariant::Original, &mut self.rng)
            }
            _ => self.field_str(obj, target, "name").unwrap_or_default(),
        };
        let total: u32 = ACTIVITY_KINDS.iter().map(|k| k.weight).sum();
        let mut r = self.rng.random_range(0..total);
        let mut kind = &ACTIVITY_KINDS[0];
        for k in ACTIVITY_KINDS {
            if r < k.weight {
                kind = k;
                break;
            }
            r -= k.weight;
        }
        let english = (!name.is_empty() && name.is_ascii() && self.pct(80)) || self.pct(5);
        let subject = if english { self.pick(kind.en) } else { self.pick(kind.zh) };
        let body = match (obj, english) {
            (DEALS, true) => self.pick(EN_DEAL_BODIES),
            (DEALS, false) => self.pick(ZH_DEAL_BODIES),
            (_, true) => self.pick(EN_BODIES),
            (_, false) => self.pick(ZH_BODIES),
        };
        let who = if name.is_empty() { if english { "the customer" } else { "客户" } } else { name.as_str() };
        let mut f = Fields::with_capacity(7);
        f.put("kind", kind.kind);
        f.put("subject", subject);
        f.put("body", body.replace("{name}", who));
        f.put("related_object", OBJECTS[obj]);
        // 60% happened in the year before ACTIVITY_SPLIT_DAY (two thirds of those are done,
        // some had a due date), 40% are planned in the year after (most with a due date, none
        // done): about 50% carry due_at and 40% done_at. Times are Beijing office hours in UTC.
        let past = self.pct(60);
        let day = if past {
            ACTIVITY_SPLIT_DAY - 1 - self.below(365) as i64
        } else {
            ACTIVITY_SPLIT_DAY + self.below(365) as i64
        };
        let at = day * 1440 + self.below(44) as i64 * 15;
        let due = if past { self.pct(35) } else { self.pct(80) };
        if due {
            f.put("due_at", format_datetime(at));
        }
        if past && self.pct(67) {
            // Done up to two days before or one day after it was due, in 5-minute steps.
            let shift = if due { (self.below(3 * 288) as i64 - 2 * 288) * 5 } else { 0 };
            f.put("done_at", format_datetime(at + shift));
        }
        let refs = vec![("related_id", OBJECTS[obj], target)];
        DemoRecord { object: OBJECTS[ACTIVITIES], key, fields: f.into_map(), refs, duplicate_of: None }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    // Independent checksum helpers (the generator's own are not reused).

    fn id_ok(id: &str) -> bool {
        let b = id.as_bytes();
        if b.len() != 18 || !b[..17].iter().all(u8::is_ascii_digit) {
            return false;
        }
        let w = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
        let sum: u32 = b[..17].iter().zip(w).map(|(d, w)| u32::from(d - b'0') * w).sum();
        let expected = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'][(sum % 11) as usize];
        char::from(b[17]).to_ascii_uppercase() == expected
    }

    fn uscc_ok(code: &str) -> bool {
        let charset = "0123456789ABCDEFGHJKLMNPQRTUWXY";
        let w = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];
        let chars: Vec<char> = code.chars().collect();
        if chars.len() != 18 {
            return false;
        }
        let mut sum = 0;
        for (c, w) in chars[..17].iter().zip(w) {
            let Some(v) = charset.find(*c) else {
                return false;
            };
            sum += v * w;
        }
        let check = (31 - sum % 31) % 31;
        charset.chars().nth(check) == Some(chars[17])
    }

    fn norm_phone(s: &str) -> String {
        let digits: String = s
            .chars()
            .filter_map(|c| match c {
                '0'..='9' => Some(c),
                '０'..='９' => char::from_u32(c as u32 - '０' as u32 + '0' as u32),
                _ => None,
            })
            .collect();
        if let Some(rest) = digits.strip_prefix("0086") {
            rest.to_owned()
        } else if digits.len() == 13 && digits.starts_with("86") {
            digits[2..].to_owned()
        } else {
            digits
        }
    }

    fn norm_email(s: &str) -> String {
        s.trim().to_lowercase()
    }

    /// (kind, normalised value) pairs of a record's strong keys.
    fn strong_keys(r: &DemoRecord) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let s = |name: &str| r.fields.get(name).and_then(Value::as_str);
        if let Some(v) = s("mobile") {
            out.push(("mobile", norm_phone(v)));
        }
        if let Some(v) = s("email") {
            out.push(("email", norm_email(v)));
        }
        if let Some(v) = s("id_number") {
            out.push(("id_number", v.to_uppercase()));
        }
        if let Some(v) = s("uscc") {
            out.push(("uscc", v.trim().to_uppercase()));
        }
        if let Some(v) = s("contract_no") {
            out.push(("contract_no", v.to_owned()));
        }
        out
    }

    fn tag(r: &DemoRecord) -> Option<&str> {
        r.fields.get("tags")?.as_array()?.iter().filter_map(Value::as_str).find(|t| t.starts_with("demo-dup-"))
    }

    #[test]
    fn demo_is_deterministic() {
        let a = generate(3000, 42, 0.05);
        let b = generate(3000, 42, 0.05);
        assert_eq!(a, b);
        let c = generate(3000, 43, 0.05);
        assert_ne!(a, c);
        // A different share changes the duplicates but still reproduces exactly.
        assert_eq!(generate(500, 7, 0.2), generate(500, 7, 0.2));
    }

    #[test]
    fn demo_counts_and_mix() {
        for n in [0usize, 1, 2, 3, 5, 9, 10, 11, 99, 100, 1001, 10_000] {
            let counts = object_counts(n);
            assert_eq!(counts.iter().sum::<usize>(), n, "n={n}");
            if n > 0 {
                assert!(counts[COMPANIES] >= 1, "n={n}");
            }
            let data = generate(n, 1, 0.05);
            assert_eq!(data.records.len(), n);
            for (i, obj) in OBJECTS.iter().enumerate() {
                let slice = data.of(obj);
                assert_eq!(slice.len(), counts[i], "n={n} {obj}");
                for (k, r) in slice.iter().enumerate() {
                    assert_eq!(r.key, k);
                    assert_eq!(r.object, *obj);
                    assert_eq!(data.index_of(obj, k).map(|i| &data.records[i]), Some(r));
                }
            }
        }
        assert_eq!(object_counts(10_000), [1500, 3000, 1500, 1500, 2500]);
        assert_eq!(object_counts(1), [1, 0, 0, 0, 0]);
    }

    #[test]
    fn demo_refs_point_to_earlier_records() {
        let data = generate(5000, 9, 0.05);
        for (i, r) in data.records.iter().enumerate() {
            for &(field, target, key) in &r.refs {
                let j = data.index_of(target, key).expect("target exists");
                assert!(j < i, "{} {} {field} -> {target} {key}", r.object, r.key);
                match (r.object, field) {
                    ("contacts", "company_id") | ("deals", "company_id") => {
                        assert_eq!(target, "companies")
                    }
                    ("deals", "contact_id") => assert_eq!(target, "contacts"),
                    ("activities", "related_id") => {
                        assert_eq!(r.fields.get("related_object").and_then(Value::as_str), Some(target))
                    }
                    other => panic!("unexpected ref {other:?}"),
                }
            }
            if r.object == "deals" {
                assert!(r.refs.iter().any(|x| x.0 == "company_id"));
            }
            if r.object == "activities" {
                assert_eq!(r.refs.len(), 1);
            }
            if let Some(orig) = r.duplicate_of {
                assert!(orig < r.key);
                let o = &data.of(r.object)[orig];
                assert!(o.duplicate_of.is_none(), "duplicates point at originals");
            }
        }
    }

    #[test]
    fn demo_strong_keys_unique_and_checksums_valid() {
        let data = generate(20_000, 2024, 0.05);
        let mut seen: HashMap<(&str, String), (&str, usize)> = HashMap::new();
        let mut checked_ids = 0;
        let mut checked_usccs = 0;
        for r in &data.records {
            if let Some(id) = r.fields.get("id_number").and_then(Value::as_str) {
                assert!(id_ok(id), "bad id {id}");
                let birth = r.fields.get("birth_date").and_then(Value::as_str).expect("birth date with id");
                assert_eq!(&id[6..14], birth.replace('-', ""));
                checked_ids += 1;
            }
            if let Some(code) = r.fields.get("uscc").and_then(Value::as_str) {
                assert!(uscc_ok(code), "bad uscc {code}");
                checked_usccs += 1;
            }
            if let Some(m) = r.fields.get("mobile").and_then(Value::as_str) {
                let n = norm_phone(m);
                assert_eq!(n.len(), 11, "{m}");
                assert!(n.starts_with('1') && (b'3'..=b'9').contains(&n.as_bytes()[1]), "{m}");
            }
            if let Some(e) = r.fields.get("email").and_then(Value::as_str) {
                assert_eq!(e.trim().matches('@').count(), 1, "{e}");
            }
            if tag(r) == Some(TAG_DUP_EXACT) {
                continue;
            }
            for k in strong_keys(r) {
                let prev = seen.insert(k.clone(), (r.object, r.key));
                assert!(prev.is_none(), "{k:?} of {} {} collides with {prev:?}", r.object, r.key);
            }
        }
        assert!(checked_ids > 500, "{checked_ids}");
        assert!(checked_usccs > 1500, "{checked_usccs}");
    }

    /// A WeChat ID names one account: people never share one; a duplicate shares its
    /// original's (the matcher takes a shared ID as strong evidence of one person).
    #[test]
    fn demo_wechat_ids_belong_to_one_person() {
        let data = generate(300_000, 7, 0.05);
        let mut owner: HashMap<&str, usize> = HashMap::new();
        let mut checked = 0;
        for r in data.of("contacts") {
            let Some(w) = r.fields.get("wechat").and_then(Value::as_str) else { continue };
            let person = r.duplicate_of.unwrap_or(r.key);
            let prev = owner.insert(w, person);
            assert!(prev.is_none_or(|p| p == person), "{w} of contacts {person} and {prev:?}");
            checked += 1;
        }
        assert!(checked > 20_000, "{checked}");
    }

    #[test]
    fn demo_duplicates_share_roughly_and_keys_match() {
        let share = 0.05;
        let data = generate(40_000, 77, share);
        let (mut exact, mut fuzzy) = (0usize, 0usize);
        for obj in ["companies", "contacts", "leads"] {
            let records = data.of(obj);
            let dups: Vec<&DemoRecord> = records.iter().filter(|r| r.duplicate_of.is_some()).collect();
            let ratio = dups.len() as f64 / records.len() as f64;
            assert!((0.035..0.065).contains(&ratio), "{obj}: {ratio}");
            for d in dups {
                let o = &records[d.duplicate_of.unwrap()];
                let ok: HashSet<_> = strong_keys(o).into_iter().collect();
                let dk: HashSet<_> = strong_keys(d).into_iter().collect();
                assert_ne!(d.fields.get("name"), o.fields.get("name"), "{obj} {}", d.key);
                match tag(d) {
                    Some(TAG_DUP_EXACT) => {
                        exact += 1;
                        assert!(!dk.is_empty() && dk.is_subset(&ok), "{obj} {}: {dk:?} vs {ok:?}", d.key);
                    }
                    Some(TAG_DUP_FUZZY) => {
                        fuzzy += 1;
                        assert!(dk.is_disjoint(&ok), "{obj} {}", d.key);
                    }
                    other => panic!("duplicate without tag: {other:?}"),
                }
            }
            assert!(records.iter().filter(|r| r.duplicate_of.is_none()).all(|r| tag(r).is_none()));
        }
        let exact_share = exact as f64 / (exact + fuzzy) as f64;
        assert!((0.4..0.6).contains(&exact_share), "{exact_share}");

        let none = generate(5000, 77, 0.0);
        assert!(none.records.iter().all(|r| r.duplicate_of.is_none()));
        // Out-of-range shares are clamped, not panics.
        let all = generate(200, 1, 7.0);
        assert!(all.of("contacts").iter().skip(1).all(|r| r.duplicate_of.is_some()));
        assert!(generate(200, 1, f64::NAN).records.iter().all(|r| r.duplicate_of.is_none()));
    }

    #[test]
    fn demo_field_shapes() {
        let data = generate(10_000, 5, 0.05);
        let enums: &[(&str, &str, &[&str])] = &[
            ("companies", "status", &["prospect", "active", "inactive", "archived"]),
            (
                "companies",
                "industry",
                &[
                    "software",
                    "manufacturing",
                    "retail",
                    "finance",
                    "healthcare",
                    "education",
                    "logistics",
                    "energy",
                    "media",
                    "other",
                ],
            ),
            ("leads", "source", &["web", "referral", "event", "cold_call", "partner", "other"]),
            ("companies", "source", crate::schema::SOURCES),
            ("contacts", "source", crate::schema::SOURCES),
            ("leads", "status", &["new", "working", "qualified", "disqualified", "converted"]),
            ("deals", "stage", &["qualification", "needs_analysis", "proposal", "negotiation", "won", "lost"]),
            ("activities", "kind", &["call", "meeting", "email", "visit", "note", "task"]),
            ("activities", "related_object", &["companies", "contacts", "deals"]),
        ];
        for (obj, field, allowed) in enums {
            for r in data.of(obj) {
                if let Some(v) = r.fields.get(*field) {
                    assert!(allowed.contains(&v.as_str().unwrap()), "{obj}.{field} = {v}");
                }
            }
        }
        // Companies and contacts name the channel they came through, three in four.
        for obj in ["companies", "contacts"] {
            let with = data.of(obj).iter().filter(|r| r.fields.contains_key("source")).count();
            let share = with as f64 / data.of(obj).len() as f64;
            assert!((0.65..0.85).contains(&share), "{obj}: {share}");
        }
        let is_date = |s: &str| {
            s.len() == 10 && time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).is_ok()
        };
        let is_datetime = |s: &str| {
            s.ends_with('Z') && time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
        };
        for r in data.of("companies") {
            let name = r.fields["name"].as_str().unwrap();
            assert!(!name.is_empty());
            let province = r.fields.get("province").and_then(Value::as_str);
            let city = r.fields.get("city").and_then(Value::as_str);
            if let (Some(p), Some(c)) = (province, city) {
                assert!(CITIES.iter().any(|x| x.province == p && x.city == c), "{p} {c}");
            }
            assert!(r.fields["tags"].is_array());
        }
        let english_companies =
            data.of("companies").iter().filter(|r| r.fields["name"].as_str().unwrap().is_ascii()).count();
        let share = english_companies as f64 / data.of("companies").len() as f64;
        assert!((0.18..0.35).contains(&share), "{share}");
        for r in data.of("contacts") {
            if let Some(b) = r.fields.get("birth_date") {
                let b = b.as_str().unwrap();
                assert!(is_date(b) && ("1960".."2003").contains(&&b[..4]), "{b}");
            }
        }
        let mut contract_nos = 0;
        for r in data.of("deals") {
            let amount = r.fields["amount"].as_object().unwrap();
            let a = amount["amount"].as_str().unwrap();
            let (int, frac) = a.split_once('.').unwrap();
            assert!(frac.len() == 2 && int.bytes().all(|b| b.is_ascii_digit()) && !int.is_empty(), "{a}");
            assert!(["CNY", "USD"].contains(&amount["currency"].as_str().unwrap()));
            if let Some(d) = r.fields.get("expected_close_date") {
                let d = d.as_str().unwrap();
                assert!(is_date(d) && (d.starts_with("2026") || d.starts_with("2027")), "{d}");
            }
            if let Some(c) = r.fields.get("contract_no") {
                let c = c.as_str().unwrap();
                let parts: Vec<&str> = c.split('-').collect();
                assert!(parts.len() == 3 && parts[0] == "HT" && parts[1].len() == 4 && parts[2].len() >= 6, "{c}");
                contract_nos += 1;
            }
        }
        let share = contract_nos as f64 / data.of("deals").len() as f64;
        assert!((0.3..0.5).contains(&share), "{share}");
        let (mut due, mut done) = (0usize, 0usize);
        for r in data.of("activities") {
            for f in ["due_at", "done_at"] {
                if let Some(v) = r.fields.get(f) {
                    assert!(is_datetime(v.as_str().unwrap()), "{v}");
                }
            }
            due += usize::from(r.fields.contains_key("due_at"));
            done += usize::from(r.fields.contains_key("done_at"));
            assert!(!r.fields["subject"].as_str().unwrap().is_empty());
            assert!(!r.fields["body"].as_str().unwrap().contains("{name}"));
        }
        let n = data.of("activities").len() as f64;
        assert!((0.4..0.6).contains(&(due as f64 / n)), "{due}");
        assert!((0.3..0.5).contains(&(done as f64 / n)), "{done}");
    }

    #[test]
    fn demo_duplicates_look_like_their_originals() {
        let data = generate(60_000, 3, 0.1);
        let mut traditional = 0;
        let mut pinyin = 0;
        let mut spaced = 0;
        let mut full_width = 0;
        for d in data.records.iter().filter(|r| r.duplicate_of.is_some()) {
            let name = d.fields["name"].as_str().unwrap();
            let o = &data.of(d.object)[d.duplicate_of.unwrap()];
            let orig = o.fields["name"].as_str().unwrap();
            if d.object == "contacts" && !orig.is_ascii() {
                if name.contains(' ') && !name.is_ascii() {
                    spaced += 1;
                }
                if name.is_ascii() {
                    pinyin += 1;
                }
            }
            if d.object == "companies" && name.chars().any(|c| crate::matching::fold::simplify_char(c) != c) {
                traditional += 1;
            }
            if d.fields.get("mobile").and_then(Value::as_str).is_some_and(|m| m.contains('１') || m.contains('３')) {
                full_width += 1;
            }
        }
        assert!(
            traditional > 0 && pinyin > 0 && spaced > 0 && full_width > 0,
            "{traditional} {pinyin} {spaced} {full_width}"
        );
    }

    /// Brand readings that differ on purpose from the matcher's general-purpose pinyin table.
    const BRAND_READINGS: &[(&str, &str)] = &[("长", "chang"), ("晟", "sheng")];

    #[test]
    fn demo_brand_tables_fold_and_read_like_the_matcher() {
        use crate::matching::fold::{char_pinyin, is_han, simplify_char, to_simplified};
        let mut seen = HashSet::new();
        for &(s, t, py, places) in HAN {
            let mut chars = s.chars();
            let c = chars.next().unwrap();
            assert!(chars.next().is_none() && is_han(c), "{s}");
            assert!(seen.insert(s), "{s} twice");
            // The matcher folds the traditional form back, and the simplified one is no
            // traditional form of something else.
            assert_eq!(to_simplified(t), s, "{t}");
            assert_eq!(simplify_char(c), c, "{s}");
            let want = BRAND_READINGS.iter().find(|r| r.0 == s).map(|r| r.1).or_else(|| char_pinyin(c));
            assert_eq!(Some(py), want, "{s}");
            assert!(!py.is_empty() && py.bytes().all(|b| b.is_ascii_lowercase()), "{s} {py}");
            assert!(!places.is_empty() && places.bytes().all(|b| b"LME".contains(&b)), "{s} {places}");
            if places.contains(['M', 'E']) {
                // "Hua'an": a vowel-initial syllable after another needs an apostrophe.
                assert!(!py.starts_with(['a', 'e', 'o']), "{s} {py} after another syllable");
            }
        }
        for list in [EN_BRAND_HEADS, EN_BRAND_TAILS] {
            let mut seen = HashSet::new();
            for w in list {
                assert!(w.bytes().all(|b| b.is_ascii_alphabetic()) && w.as_bytes()[0].is_ascii_uppercase(), "{w}");
                assert!(w[1..].bytes().all(|b| b.is_ascii_lowercase()), "{w}");
                assert!(seen.insert(w), "{w} twice");
            }
        }
        // Traditional renderings of the other parts of a name fold back too.
        let words = INDUSTRIES.iter().flat_map(|i| i.zh.iter()).chain(ZH_SUFFIXES).map(|(s, t, _)| (*s, *t));
        for (s, t) in words.chain(CITIES.iter().map(|c| (c.short, c.trad))) {
            assert_eq!(to_simplified(t), s, "{t}");
        }
    }

    #[test]
    fn demo_brands_render_in_every_script() {
        use crate::matching::fold::to_simplified;
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (mut chinese, mut traditional_differs, mut three, mut english, mut typos) = (0, 0, 0, 0, 0);
        for key in 0..5000 {
            let p = company_parts(3, SALT_COMPANY, key);
            let host = company_host(&p);
            assert!(
                host.split('.').all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'))
                    && host.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'),
                "{host}"
            );
            let original = company_name(&p, CoVariant::Original, &mut rng);
            if p.english {
                let brand = p.brand();
                assert!(brand.bytes().all(|b| b.is_ascii_alphabetic() || b == b' '), "{brand}");
                assert!(original.is_ascii() && original.starts_with(&brand), "{original}");
                // A typo may swap two equal letters (company_variant then tries again).
                english += 1;
                typos += usize::from(company_name(&p, CoVariant::Typo, &mut rng) != original);
                continue;
            }
            chinese += 1;
            let brand = p.brand();
            let chars: Vec<char> = brand.chars().collect();
            assert_eq!(chars.len(), usize::from(p.brand_len), "{brand}");
            assert!((2..=3).contains(&chars.len()), "{brand}");
            three += usize::from(chars.len() == 3);
            assert!(chars.iter().collect::<HashSet<_>>().len() == chars.len(), "{brand} repeats a character");
            for pair in chars.windows(2) {
                let pair: String = pair.iter().collect();
                assert!(!RESERVED_BRAND_PAIRS.contains(&pair.as_str()), "{brand}");
                assert!(CITIES.iter().all(|c| c.short != pair), "{brand}");
            }
            assert!(original.contains(&brand), "{original}");
            // Traditional: folds back to the simplified name, and differs from it whenever
            // one of the brand's characters has a traditional form of its own.
            let trad = p.brand_traditional();
            assert_eq!(to_simplified(&trad), brand);
            let trad_name = company_name(&p, CoVariant::Traditional, &mut rng);
            assert!(trad_name.contains(&trad), "{trad_name}");
            if p.han().any(|c| c.0 != c.1) {
                traditional_differs += 1;
                assert_ne!(trad, brand);
                assert_ne!(trad_name, original);
            }
            // Pinyin: syllables run together, capitalised, ASCII only.
            let py = p.brand_pinyin();
            assert!(py.as_bytes()[0].is_ascii_uppercase() && py[1..].bytes().all(|b| b.is_ascii_lowercase()), "{py}");
            assert_eq!(py.to_lowercase(), p.han().map(|c| c.2).collect::<String>());
            let py_name = company_name(&p, CoVariant::Pinyin, &mut rng);
            assert!(py_name.is_ascii() && py_name.contains(&py), "{py_name}");
        }
        assert!(traditional_differs * 3 > chinese, "{traditional_differs} of {chinese}");
        assert!(typos * 10 > english * 9, "{typos} of {english}");
        assert!((0.4..0.6).contains(&(three as f64 / chinese as f64)), "{three} of {chinese}");
    }

    /// Distinct companies (no injected duplicates) of a million-record demo, about 150 000,
    /// hardly ever share a name: the matcher's canonical name drops the legal suffix and a
    /// bracketed city, so same brand and industry word is a possible duplicate.
    #[test]
    fn demo_company_names_rarely_collide() {
        let companies = object_counts(1_000_000)[COMPANIES];
        assert_eq!(companies, 150_000);
        for seed in [1, 42] {
            let mut names: HashMap<(bool, String, &str), usize> = HashMap::new();
            let mut in_city: HashMap<(bool, String, &str, usize), usize> = HashMap::new();
            let mut of_language = [0usize; 2];
            for key in 0..companies {
                let p = company_parts(seed, SALT_COMPANY, key);
                let ind = &INDUSTRIES[p.industry];
                // Canonical: "Blue Harbor" and "Blueharbor" are the same name.
                let brand: String = p.brand().to_lowercase().split_whitespace().collect();
                let word = if p.english { ind.en[p.word] } else { ind.zh[p.word].0 };
                *in_city.entry((p.english, brand.clone(), word, p.city)).or_default() += 1;
                *names.entry((p.english, brand, word)).or_default() += 1;
                of_language[usize::from(p.english)] += 1;
            }
            let shared = |english: bool, counts: &mut dyn Iterator<Item = (bool, usize)>| -> f64 {
                let n: usize = counts.filter(|&(e, c)| e == english && c > 1).map(|(_, c)| c).sum();
                n as f64 / of_language[usize::from(english)] as f64
            };
            for english in [false, true] {
                let by_name = shared(english, &mut names.iter().map(|(k, c)| (k.0, *c)));
                let by_city = shared(english, &mut in_city.iter().map(|(k, c)| (k.0, *c)));
                let what = if english { "English" } else { "Chinese" };
                assert!(by_name < 0.005, "seed {seed}: {by_name} of {what} names are shared");
                assert!(by_city < 0.0005, "seed {seed}: {by_city} of {what} names are shared in one city");
            }
        }
    }

    #[test]
    fn demo_landlines_are_valid_fixed_lines() {
        // 400/800 service numbers came out about once per thousand landlines and were refused.
        let mut g = Gen::new(3, 0.0, object_counts(1000));
        for i in 0..40_000 {
            let city = &CITIES[i % CITIES.len()];
            let raw = g.landline(city);
            assert!(crate::normalize::normalize_phone(&raw, "CN").is_ok(), "{raw}");
        }
    }

    #[test]
    fn demo_calendar_matches_time_crate() {
        for z in [-4000i64, -1, 0, 1, 59, 365, 10_957, 20_000, 20_454, 21_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
            let t = time::Date::from_julian_day((z + 2_440_588) as i32).unwrap();
            assert_eq!((t.year() as i64, u8::from(t.month()) as i64, i64::from(t.day())), (y, m, d));
        }
    }

    #[test]
    fn demo_permutations_are_bijective_on_their_moduli() {
        fn gcd(a: u128, b: u128) -> u128 {
            if b == 0 { a } else { gcd(b, a % b) }
        }
        let moduli = [
            MOBILE_PREFIXES.len() as u128 * u128::from(HUNDRED_MILLION),
            CITIES.len() as u128 * u128::from(BIRTH_DAYS) * 1000,
            u128::from(HUNDRED_MILLION),
            1000,
            10_000_000_000,
        ];
        for m in moduli {
            for a in PERM_PRIMES {
                assert_eq!(gcd(a, m), 1, "{a} {m}");
            }
        }
        for space in 0..PERM_PRIMES.len() {
            let mut seen = HashSet::new();
            for x in 0..1000 {
                assert!(seen.insert(permute(99, space, x, 1000)));
            }
        }
    }

    #[test]
    #[ignore = "timing; run with --release -- --ignored"]
    fn demo_million_records_timing() {
        let t = std::time::Instant::now();
        let data = generate(1_000_000, 1, 0.05);
        assert_eq!(data.records.len(), 1_000_000);
        eprintln!("1M records in {:?}", t.elapsed());
    }
}
