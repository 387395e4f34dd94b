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

/// Company brand names (字号): simplified, traditional, pinyin.
const BRANDS: &[(&str, &str, &str)] = &[
    ("云图", "雲圖", "Yuntu"),
    ("华信", "華信", "Huaxin"),
    ("博远", "博遠", "Boyuan"),
    ("天成", "天成", "Tiancheng"),
    ("鼎盛", "鼎盛", "Dingsheng"),
    ("恒通", "恒通", "Hengtong"),
    ("嘉禾", "嘉禾", "Jiahe"),
    ("瑞丰", "瑞豐", "Ruifeng"),
    ("金桥", "金橋", "Jinqiao"),
    ("中科", "中科", "Zhongke"),
    ("星辰", "星辰", "Xingchen"),
    ("海川", "海川", "Haichuan"),
    ("远航", "遠航", "Yuanhang"),
    ("卓越", "卓越", "Zhuoyue"),
    ("新元", "新元", "Xinyuan"),
    ("宏达", "宏達", "Hongda"),
    ("永泰", "永泰", "Yongtai"),
    ("明德", "明德", "Mingde"),
    ("同舟", "同舟", "Tongzhou"),
    ("锦程", "錦程", "Jincheng"),
    ("智联", "智聯", "Zhilian"),
    ("蓝海", "藍海", "Lanhai"),
    ("正源", "正源", "Zhengyuan"),
    ("万方", "萬方", "Wanfang"),
    ("汇通", "匯通", "Huitong"),
    ("启明", "啟明", "Qiming"),
    ("思创", "思創", "Sichuang"),
    ("睿智", "睿智", "Ruizhi"),
    ("联创", "聯創", "Lianchuang"),
    ("青禾", "青禾", "Qinghe"),
    ("东升", "東升", "Dongsheng"),
    ("德源", "德源", "Deyuan"),
    ("长风", "長風", "Changfeng"),
    ("泰和", "泰和", "Taihe"),
    ("银河", "銀河", "Yinhe"),
    ("凯旋", "凱旋", "Kaixuan"),
    ("九州", "九州", "Jiuzhou"),
    ("百川", "百川", "Baichuan"),
    ("四海", "四海", "Sihai"),
    ("未来", "未來", "Weilai"),
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
        ],
        en: &["Software", "Systems", "Data", "Digital"],
    },
    Industry {
        code: "manufacturing",
        zh: &[
            ("机械制造", "機械製造", "Machinery Manufacturing"),
            ("精密机械", "精密機械", "Precision Machinery"),
            ("新材料", "新材料", "New Materials"),
            ("电子", "電子", "Electronics"),
            ("汽车零部件", "汽車零部件", "Auto Parts"),
        ],
        en: &["Manufacturing", "Precision", "Industries", "Components"],
    },
    Industry {
        code: "retail",
        zh: &[
            ("商贸", "商貿", "Trading"),
            ("百货", "百貨", "Department Store"),
            ("电子商务", "電子商務", "E-Commerce"),
            ("连锁超市", "連鎖超市", "Supermarket Chain"),
        ],
        en: &["Trading", "Retail", "Commerce"],
    },
    Industry {
        code: "finance",
        zh: &[
            ("投资管理", "投資管理", "Investment Management"),
            ("融资租赁", "融資租賃", "Financial Leasing"),
            ("金融信息服务", "金融信息服務", "Financial Information Services"),
        ],
        en: &["Capital", "Financial", "Investments"],
    },
    Industry {
        code: "healthcare",
        zh: &[
            ("医疗器械", "醫療器械", "Medical Devices"),
            ("生物科技", "生物科技", "Biotechnology"),
            ("医药", "醫藥", "Pharmaceutical"),
            ("健康管理", "健康管理", "Health Management"),
        ],
        en: &["Medical", "Healthcare", "Life Sciences"],
    },
    Industry {
        code: "education",
        zh: &[
            ("教育科技", "教育科技", "Education Technology"),
            ("教育咨询", "教育諮詢", "Education Consulting"),
            ("职业培训", "職業培訓", "Vocational Training"),
        ],
        en: &["Education", "Learning", "Academy"],
    },
    Industry {
        code: "logistics",
        zh: &[
            ("物流", "物流", "Logistics"),
            ("供应链管理", "供應鏈管理", "Supply Chain Management"),
            ("国际货运代理", "國際貨運代理", "International Freight Forwarding"),
            ("仓储服务", "倉儲服務", "Warehousing"),
        ],
        en: &["Logistics", "Freight", "Supply Chain"],
    },
    Industry {
        code: "energy",
        zh: &[
            ("新能源", "新能源", "New Energy"),
            ("能源科技", "能源科技", "Energy Technology"),
            ("电力工程", "電力工程", "Power Engineering"),
            ("光伏科技", "光伏科技", "Photovoltaic Technology"),
        ],
        en: &["Energy", "Power", "Solar"],
    },
    Industry {
        code: "media",
        zh: &[
            ("文化传媒", "文化傳媒", "Culture & Media"),
            ("广告", "廣告", "Advertising"),
            ("影视制作", "影視製作", "Film & TV Production"),
            ("数字传媒", "數字傳媒", "Digital Media"),
        ],
        en: &["Media", "Studios", "Advertising"],
    },
    Industry {
        code: "other",
        zh: &[
            ("企业管理咨询", "企業管理諮詢", "Management Consulting"),
            ("实业", "實業", "Industrial"),
            ("建筑工程", "建築工程", "Construction Engineering"),
            ("环保科技", "環保科技", "Environmental Technology"),
        ],
        en: &["Consulting", "Holdings", "Partners"],
    },
];

/// Legal suffixes of Chinese names: simplified, traditional, English.
const ZH_SUFFIXES: &[(&str, &str, &str)] = &[
    ("有限公司", "有限公司", "Co., Ltd."),
    ("股份有限公司", "股份有限公司", "Co., Ltd."),
    ("集团有限公司", "集團有限公司", "Group Co., Ltd."),
    ("有限责任公司", "有限責任公司", "Co., Ltd."),
];

const EN_WORDS: &[&str] = &[
    "Northwind",
    "Bluestone",
    "Silverline",
    "Redwood",
    "Summit",
    "Evergreen",
    "Harborview",
    "Crescent",
    "Ironbridge",
    "Maplewood",
    "Oakridge",
    "Brightpath",
    "Clearwater",
    "Starlight",
    "Pinnacle",
    "Horizon",
    "Lakeside",
    "Sterling",
    "Westbrook",
    "Kingsbridge",
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

#[derive(Clone, Copy)]
struct CompanyParts {
    english: bool,
    city: usize,
    industry: usize,
    /// Index into BRANDS (Chinese) or EN_WORDS (English).
    brand: usize,
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
    let (brand, word, suffix) = if english {
        (m.below(EN_WORDS.len()), m.below(ind.en.len()), m.below(EN_SUFFIXES.len()))
    } else {
        let s = m.below(100);
        let suffix = match s {
            0..65 => 0,
            65..80 => 1,
            80..88 => 2,
            _ => 3,
        };
        (m.below(BRANDS.len()), m.below(ind.zh.len()), suffix)
    };
    let l = m.below(100);
    let layout = match l {
        0..60 => 0,
        60..85 => 1,
        _ => 2,
    };
    let wide = m.below(2) == 0;
    let web = m.below(5) as u8;
    CompanyParts { english, city, industry, brand, word, suffix, layout, wide, web }
}

/// Short name used in deal names.
fn company_short(p: &CompanyParts) -> &'static str {
    if p.english { EN_WORDS[p.brand] } else { BRANDS[p.brand].0 }
}

/// Host of the company's website and work e-mail.
fn company_host(p: &CompanyParts) -> String {
    let base = if p.english { EN_WORDS[p.brand].to_ascii_lowercase() } else { BRANDS[p.brand].2.to_ascii_lowercase() };
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
        let word = EN_WORDS[p.brand];
        let iw = ind.en[p.word];
        let suffix = EN_SUFFIXES[p.suffix];
        let original = format!("{word} {iw} {suffix}");
        return match v {
            CoVariant::Typo => format!("{} {iw} {suffix}", typo(word, rng)),
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
    let (brand_s, brand_t, brand_py) = BRANDS[p.brand];
    let (word_s, word_t, word_en) = ind.zh[p.word];
    let (suffix_s, suffix_t, suffix_en) = ZH_SUFFIXES[p.suffix];
    if v == CoVariant::Pinyin {
        return match p.layout {
            0 => format!("{} {brand_py} {word_en} {suffix_en}", city.pinyin),
            1 => format!("{brand_py} ({}) {word_en} {suffix_en}", city.pinyin),
            _ => format!("{brand_py} {word_en} {suffix_en}"),
        };
    }
    let trad = v == CoVariant::Traditional;
    let city_name = if trad { city.trad } else { city.short };
    let brand = if trad { brand_t } else { brand_s };
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
        let mut r = self.rng.random_range(0..total.max(1));
        for &(x, w) in xs {
            if r < w {
                return x;
            }
            r -= w;
        }
        xs[xs.len() - 1].0
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
                format!("{}{}{n}", last.to_ascii_lowercase(), first.to_ascii_lowercase())
            }
            7..9 => mobile.to_string(),
            _ => {
                let (first, _) = p.latin();
                let n = self.rng.random_range(1970..2005u32);
                format!("{first}_{n}")
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
        let rest = self.rng.random_range(0..10_000_000u32);
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
        let short = company_short(&cp);
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
            if d.object == "companies"
                && ["雲", "華", "遠", "達", "聯", "萬", "東", "長", "銀", "凱"].iter().any(|c| name.contains(c))
            {
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
