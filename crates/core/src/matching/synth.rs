//! A labelled benchmark for the matching engine: synthetic CRM contact records of Chinese and
//! English people, where some people were entered more than once with the errors such data
//! really has, and the truth (which records are the same person) is kept apart.
//!
//! Errors in duplicates: homophone characters (张伟/张玮), traditional characters (張偉), pinyin
//! instead of Han characters, swapped name order, typos, English nicknames and initials;
//! phones in every notation (+86, 0086, dashes, full-width digits), mistyped or replaced;
//! e-mails re-cased, mistyped or replaced; dates in other notations, day and month swapped,
//! a digit off; company legal suffixes, city prefixes, traditional characters or a new
//! employer; addresses written differently or moved; missing fields everywhere.
//!
//! Hard non-duplicates are there too: common names are common (several different 王伟), family
//! members share a surname, an address and often a company, colleagues share a company, and
//! e-mail users are built from names so different people have similar addresses.
//!
//! The generator shares no tables with the matcher: its own name pools carry their traditional
//! forms and pinyin, so the benchmark also measures the matcher's folding tables.

use crate::normalize::resident_id_check_char;

/// Columns of the people benchmark and the kind each is matched as.
pub const PEOPLE_COLUMNS: &[(&str, &str)] = &[
    ("id", "id"),
    ("name", "person_name"),
    ("mobile", "phone"),
    ("email", "email"),
    ("birth_date", "date"),
    ("id_number", "id_number"),
    ("company", "company_name"),
    ("city", "city"),
    ("address", "address"),
];

/// Columns of the companies benchmark and the kind each is matched as.
pub const COMPANY_COLUMNS: &[(&str, &str)] = &[
    ("id", "id"),
    ("name", "company_name"),
    ("uscc", "id_number"),
    ("phone", "phone"),
    ("website", "exact"),
    ("city", "city"),
    ("address", "address"),
];

/// Generated records (first column the record id) and the entity behind each record.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthData {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Entity number per row: rows with the same number describe the same person or company.
    pub entity: Vec<u32>,
}

/// Size and randomness of a benchmark.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SynthConfig {
    /// Number of records to produce.
    pub records: usize,
    pub seed: u64,
    /// Share of entities entered more than once.
    pub duplicate_share: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self { records: 5000, seed: 7, duplicate_share: 0.4 }
    }
}

/// SplitMix64 with helpers; deterministic for a seed on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { ((u128::from(self.next()) * n as u128) >> 64) as usize }
    }
    fn range(&mut self, low: u32, high_inclusive: u32) -> u32 {
        low + self.below((high_inclusive - low + 1) as usize) as u32
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    /// Index drawn with the given weights.
    fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut x = self.below(total as usize) as u32;
        for (i, &w) in weights.iter().enumerate() {
            if x < w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

/// Surnames: simplified, traditional, pinyin (surname reading), weight (per ten thousand).
const SURNAMES: &[(&str, &str, &str, u32)] = &[
    ("王", "王", "Wang", 710),
    ("李", "李", "Li", 700),
    ("张", "張", "Zhang", 670),
    ("刘", "劉", "Liu", 540),
    ("陈", "陳", "Chen", 450),
    ("杨", "楊", "Yang", 300),
    ("黄", "黃", "Huang", 220),
    ("赵", "趙", "Zhao", 220),
    ("吴", "吳", "Wu", 200),
    ("周", "周", "Zhou", 190),
    ("徐", "徐", "Xu", 170),
    ("孙", "孫", "Sun", 150),
    ("马", "馬", "Ma", 150),
    ("朱", "朱", "Zhu", 130),
    ("胡", "胡", "Hu", 130),
    ("郭", "郭", "Guo", 120),
    ("何", "何", "He", 120),
    ("高", "高", "Gao", 110),
    ("林", "林", "Lin", 110),
    ("罗", "羅", "Luo", 90),
    ("郑", "鄭", "Zheng", 90),
    ("梁", "梁", "Liang", 90),
    ("谢", "謝", "Xie", 80),
    ("宋", "宋", "Song", 80),
    ("唐", "唐", "Tang", 80),
    ("许", "許", "Xu", 70),
    ("韩", "韓", "Han", 70),
    ("冯", "馮", "Feng", 70),
    ("邓", "鄧", "Deng", 70),
    ("曹", "曹", "Cao", 70),
    ("彭", "彭", "Peng", 70),
    ("曾", "曾", "Zeng", 60),
    ("肖", "肖", "Xiao", 60),
    ("田", "田", "Tian", 60),
    ("董", "董", "Dong", 50),
    ("袁", "袁", "Yuan", 50),
    ("潘", "潘", "Pan", 50),
    ("于", "于", "Yu", 50),
    ("蒋", "蔣", "Jiang", 50),
    ("蔡", "蔡", "Cai", 50),
    ("余", "余", "Yu", 50),
    ("杜", "杜", "Du", 50),
    ("叶", "葉", "Ye", 40),
    ("程", "程", "Cheng", 40),
    ("苏", "蘇", "Su", 40),
    ("魏", "魏", "Wei", 40),
    ("吕", "呂", "Lyu", 40),
    ("丁", "丁", "Ding", 40),
    ("任", "任", "Ren", 40),
    ("沈", "沈", "Shen", 40),
    ("姚", "姚", "Yao", 40),
    ("卢", "盧", "Lu", 40),
    ("姜", "姜", "Jiang", 40),
    ("崔", "崔", "Cui", 40),
    ("钟", "鍾", "Zhong", 40),
    ("谭", "譚", "Tan", 30),
    ("陆", "陸", "Lu", 30),
    ("汪", "汪", "Wang", 30),
    ("范", "範", "Fan", 30),
    ("金", "金", "Jin", 30),
    ("石", "石", "Shi", 30),
    ("廖", "廖", "Liao", 30),
    ("贾", "賈", "Jia", 30),
    ("夏", "夏", "Xia", 30),
    ("韦", "韋", "Wei", 30),
    ("方", "方", "Fang", 30),
    ("白", "白", "Bai", 30),
    ("邹", "鄒", "Zou", 30),
    ("孟", "孟", "Meng", 30),
    ("熊", "熊", "Xiong", 30),
    ("秦", "秦", "Qin", 30),
    ("邱", "邱", "Qiu", 30),
    ("江", "江", "Jiang", 30),
    ("尹", "尹", "Yin", 30),
    ("薛", "薛", "Xue", 30),
    ("闫", "閆", "Yan", 20),
    ("段", "段", "Duan", 20),
    ("雷", "雷", "Lei", 20),
    ("侯", "侯", "Hou", 20),
    ("龙", "龍", "Long", 20),
    ("史", "史", "Shi", 20),
    ("陶", "陶", "Tao", 20),
    ("黎", "黎", "Li", 20),
    ("贺", "賀", "He", 20),
    ("顾", "顧", "Gu", 20),
    ("毛", "毛", "Mao", 20),
    ("郝", "郝", "Hao", 20),
    ("龚", "龔", "Gong", 20),
    ("邵", "邵", "Shao", 20),
    ("万", "萬", "Wan", 20),
    ("钱", "錢", "Qian", 20),
    ("严", "嚴", "Yan", 20),
    ("覃", "覃", "Qin", 10),
    ("单", "單", "Shan", 10),
    ("区", "區", "Ou", 5),
    ("仇", "仇", "Qiu", 5),
    ("解", "解", "Xie", 5),
    ("查", "查", "Zha", 5),
    ("欧阳", "歐陽", "Ouyang", 10),
    ("司马", "司馬", "Sima", 5),
    ("诸葛", "諸葛", "Zhuge", 3),
    ("上官", "上官", "Shangguan", 3),
];

/// Given-name characters grouped by sound: (pinyin, [(simplified, traditional)]). A homophone
/// error replaces a character by another of its group; the first of a group is the most used.
const GIVEN_GROUPS: &[(&str, &[(&str, &str)])] = &[
    ("wei", &[("伟", "偉"), ("玮", "瑋"), ("维", "維"), ("薇", "薇"), ("巍", "巍"), ("炜", "煒")]),
    ("li", &[("丽", "麗"), ("莉", "莉"), ("立", "立"), ("力", "力"), ("俐", "俐")]),
    ("jing", &[("静", "靜"), ("晶", "晶"), ("婧", "婧"), ("菁", "菁"), ("敬", "敬")]),
    ("min", &[("敏", "敏"), ("民", "民"), ("珉", "珉"), ("旻", "旻")]),
    ("hua", &[("华", "華"), ("桦", "樺"), ("骅", "驊")]),
    ("jun", &[("军", "軍"), ("君", "君"), ("俊", "俊"), ("峻", "峻"), ("骏", "駿")]),
    ("yan", &[("艳", "艷"), ("燕", "燕"), ("妍", "妍"), ("彦", "彥"), ("岩", "巖")]),
    ("jie", &[("杰", "傑"), ("洁", "潔"), ("婕", "婕"), ("捷", "捷")]),
    ("tao", &[("涛", "濤"), ("韬", "韜"), ("滔", "滔")]),
    ("ming", &[("明", "明"), ("铭", "銘"), ("鸣", "鳴")]),
    ("hui", &[("辉", "輝"), ("慧", "慧"), ("惠", "惠"), ("晖", "暉"), ("卉", "卉")]),
    ("xin", &[("欣", "欣"), ("鑫", "鑫"), ("昕", "昕"), ("馨", "馨"), ("新", "新")]),
    ("yu", &[("宇", "宇"), ("雨", "雨"), ("玉", "玉"), ("瑜", "瑜"), ("钰", "鈺"), ("煜", "煜")]),
    ("hao", &[("浩", "浩"), ("昊", "昊"), ("皓", "皓"), ("豪", "豪")]),
    ("yi", &[("怡", "怡"), ("一", "一"), ("毅", "毅"), ("艺", "藝"), ("依", "依"), ("仪", "儀")]),
    ("ting", &[("婷", "婷"), ("霆", "霆"), ("亭", "亭")]),
    ("xiao", &[("晓", "曉"), ("小", "小"), ("筱", "筱"), ("潇", "瀟")]),
    ("qiang", &[("强", "強"), ("蔷", "薔")]),
    ("lei", &[("磊", "磊"), ("蕾", "蕾"), ("雷", "雷")]),
    ("fang", &[("芳", "芳"), ("方", "方"), ("舫", "舫")]),
    ("na", &[("娜", "娜"), ("纳", "納")]),
    ("ping", &[("平", "平"), ("萍", "萍")]),
    ("yong", &[("勇", "勇"), ("永", "永"), ("咏", "詠")]),
    ("jian", &[("建", "建"), ("健", "健"), ("剑", "劍"), ("坚", "堅")]),
    ("guo", &[("国", "國"), ("果", "果")]),
    ("wen", &[("文", "文"), ("雯", "雯")]),
    ("peng", &[("鹏", "鵬"), ("朋", "朋")]),
    ("xuan", &[("轩", "軒"), ("萱", "萱"), ("璇", "璇"), ("宣", "宣")]),
    ("zi", &[("子", "子"), ("梓", "梓"), ("紫", "紫"), ("姿", "姿")]),
    ("han", &[("涵", "涵"), ("晗", "晗"), ("寒", "寒"), ("翰", "翰")]),
    ("jia", &[("佳", "佳"), ("嘉", "嘉"), ("家", "家")]),
    ("chen", &[("晨", "晨"), ("辰", "辰"), ("琛", "琛")]),
    ("si", &[("思", "思"), ("斯", "斯")]),
    ("shu", &[("淑", "淑"), ("舒", "舒"), ("书", "書")]),
    ("qing", &[("清", "清"), ("青", "青"), ("庆", "慶"), ("晴", "晴")]),
    ("lin", &[("琳", "琳"), ("林", "林"), ("霖", "霖"), ("麟", "麟")]),
    ("kai", &[("凯", "凱"), ("楷", "楷"), ("锴", "鍇")]),
    ("bo", &[("博", "博"), ("波", "波"), ("柏", "柏")]),
    ("feng", &[("峰", "峰"), ("锋", "鋒"), ("枫", "楓"), ("丰", "豐"), ("凤", "鳳")]),
    ("hong", &[("红", "紅"), ("宏", "宏"), ("鸿", "鴻"), ("洪", "洪"), ("虹", "虹")]),
    ("dong", &[("东", "東"), ("冬", "冬"), ("栋", "棟")]),
    ("long", &[("龙", "龍"), ("隆", "隆")]),
    ("fei", &[("飞", "飛"), ("菲", "菲"), ("斐", "斐")]),
    ("rui", &[("瑞", "瑞"), ("睿", "睿"), ("锐", "銳")]),
    ("yang", &[("洋", "洋"), ("阳", "陽"), ("扬", "揚")]),
    ("chao", &[("超", "超"), ("朝", "朝")]),
    ("gang", &[("刚", "剛"), ("钢", "鋼")]),
    ("bin", &[("斌", "斌"), ("彬", "彬"), ("滨", "濱")]),
    ("ning", &[("宁", "寧"), ("凝", "凝")]),
    ("xue", &[("雪", "雪"), ("学", "學")]),
    ("mei", &[("梅", "梅"), ("美", "美")]),
    ("lan", &[("兰", "蘭"), ("岚", "嵐"), ("蓝", "藍")]),
    ("qian", &[("倩", "倩"), ("茜", "茜"), ("谦", "謙")]),
    ("zhi", &[("志", "志"), ("智", "智"), ("芝", "芝")]),
    ("ying", &[("英", "英"), ("颖", "穎"), ("莹", "瑩"), ("瑛", "瑛"), ("盈", "盈")]),
    ("yun", &[("云", "雲"), ("芸", "蕓"), ("韵", "韻"), ("昀", "昀")]),
    ("ze", &[("泽", "澤")]),
    ("cheng", &[("成", "成"), ("诚", "誠"), ("城", "城")]),
    ("jin", &[("金", "金"), ("锦", "錦"), ("晋", "晉"), ("瑾", "瑾")]),
    ("de", &[("德", "德")]),
    ("zhen", &[("振", "振"), ("珍", "珍"), ("贞", "貞")]),
    ("rong", &[("荣", "榮"), ("蓉", "蓉"), ("容", "容")]),
    ("tian", &[("天", "天"), ("甜", "甜")]),
    ("hai", &[("海", "海")]),
    ("chun", &[("春", "春"), ("纯", "純")]),
    ("qiu", &[("秋", "秋")]),
    ("shan", &[("珊", "珊"), ("山", "山"), ("杉", "杉")]),
];

const EN_FIRST: &[(&str, &[&str])] = &[
    ("William", &["Bill", "Will", "Liam"]),
    ("Robert", &["Bob", "Rob"]),
    ("Elizabeth", &["Liz", "Beth", "Eliza"]),
    ("Katherine", &["Kate", "Kathy", "Catherine"]),
    ("Michael", &["Mike"]),
    ("James", &["Jim", "Jimmy"]),
    ("Jennifer", &["Jen", "Jenny"]),
    ("Christopher", &["Chris"]),
    ("Daniel", &["Dan", "Danny"]),
    ("Matthew", &["Matt"]),
    ("Anthony", &["Tony"]),
    ("Margaret", &["Maggie", "Peggy"]),
    ("Richard", &["Rick", "Dick"]),
    ("Thomas", &["Tom"]),
    ("Alexander", &["Alex"]),
    ("Samantha", &["Sam"]),
    ("Jonathan", &["Jon"]),
    ("Rebecca", &["Becky"]),
    ("Emily", &[]),
    ("Olivia", &[]),
    ("Sophia", &[]),
    ("Grace", &[]),
    ("Chloe", &[]),
    ("Ryan", &[]),
    ("Hannah", &[]),
    ("Kevin", &[]),
    ("Lily", &[]),
    ("Jason", &[]),
    ("Amy", &[]),
    ("Eric", &[]),
    ("Vivian", &[]),
    ("Peter", &["Pete"]),
    ("Linda", &[]),
    ("Jessica", &["Jess"]),
    ("Andrew", &["Andy", "Drew"]),
    ("Rachel", &[]),
    ("Brian", &[]),
    ("Laura", &[]),
    ("Mark", &[]),
    ("Sarah", &["Sara"]),
    ("David", &["Dave"]),
    ("Susan", &["Sue"]),
    ("Steven", &["Steve", "Stephen"]),
    ("Nicole", &["Nicky"]),
    ("Patrick", &["Pat"]),
    ("Helen", &[]),
    ("George", &[]),
    ("Anna", &["Ann"]),
    ("Lucas", &["Luke"]),
    ("Isabella", &["Bella", "Isabel"]),
];

const EN_LAST: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Miller",
    "Davis",
    "Wilson",
    "Anderson",
    "Taylor",
    "Thomas",
    "Moore",
    "Martin",
    "Jackson",
    "Thompson",
    "White",
    "Harris",
    "Clark",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Green",
    "Baker",
    "Adams",
    "Nelson",
    "Hill",
    "Campbell",
    "Mitchell",
    "Roberts",
    "Carter",
    "Phillips",
    "Evans",
    "Turner",
    "Parker",
    "Collins",
    "Edwards",
    "Stewart",
    "Morris",
    "Murphy",
    "Cook",
    "Rogers",
    "Morgan",
    "Cooper",
    "Peterson",
    "Reed",
    "Bailey",
    "Bell",
    "Kelly",
    "Howard",
    "Ward",
    "Cox",
    "Richardson",
    "Wood",
    "Watson",
    "Brooks",
    "Bennett",
    "Gray",
    "Hughes",
    "Price",
    "Sanders",
    "Myers",
    "Long",
    "Ross",
    "Foster",
    "Fischer",
    "Müller",
    "O'Brien",
    "McDonald",
    "Schmidt",
    "Dubois",
    "García",
    "Rossi",
    "Novak",
    "Kowalski",
    "Jensen",
];

/// Cities: simplified, traditional, pinyin, province, districts, roads, resident-ID region code.
struct City {
    name: (&'static str, &'static str, &'static str),
    province: &'static str,
    districts: &'static [&'static str],
    roads: &'static [&'static str],
    region: &'static str,
}

const CITIES: &[City] = &[
    City {
        name: ("杭州", "杭州", "Hangzhou"),
        province: "浙江省",
        districts: &["西湖区", "上城区", "滨江区", "余杭区"],
        roads: &["文三路", "天目山路", "江南大道", "延安路", "学院路"],
        region: "330106",
    },
    City {
        name: ("北京", "北京", "Beijing"),
        province: "",
        districts: &["海淀区", "朝阳区", "东城区", "西城区"],
        roads: &["中关村大街", "建国路", "知春路", "长安街", "望京街"],
        region: "110108",
    },
    City {
        name: ("上海", "上海", "Shanghai"),
        province: "",
        districts: &["浦东新区", "徐汇区", "静安区", "长宁区"],
        roads: &["世纪大道", "淮海中路", "南京西路", "张江路", "虹桥路"],
        region: "310115",
    },
    City {
        name: ("深圳", "深圳", "Shenzhen"),
        province: "广东省",
        districts: &["南山区", "福田区", "龙岗区", "宝安区"],
        roads: &["深南大道", "科技园路", "华强北路", "滨海大道"],
        region: "440305",
    },
    City {
        name: ("广州", "廣州", "Guangzhou"),
        province: "广东省",
        districts: &["天河区", "越秀区", "海珠区"],
        roads: &["天河路", "环市东路", "中山大道", "珠江东路"],
        region: "440106",
    },
    City {
        name: ("南京", "南京", "Nanjing"),
        province: "江苏省",
        districts: &["鼓楼区", "玄武区", "建邺区"],
        roads: &["中山路", "汉中路", "江东中路", "北京东路"],
        region: "320106",
    },
    City {
        name: ("苏州", "蘇州", "Suzhou"),
        province: "江苏省",
        districts: &["姑苏区", "工业园区", "吴中区"],
        roads: &["人民路", "星湖街", "干将路", "东环路"],
        region: "320508",
    },
    City {
        name: ("成都", "成都", "Chengdu"),
        province: "四川省",
        districts: &["武侯区", "锦江区", "高新区"],
        roads: &["天府大道", "人民南路", "春熙路", "科华北路"],
        region: "510107",
    },
    City {
        name: ("武汉", "武漢", "Wuhan"),
        province: "湖北省",
        districts: &["洪山区", "江汉区", "武昌区"],
        roads: &["珞喻路", "解放大道", "中北路", "光谷大道"],
        region: "420111",
    },
    City {
        name: ("西安", "西安", "Xi'an"),
        province: "陕西省",
        districts: &["雁塔区", "碑林区", "未央区"],
        roads: &["长安路", "科技路", "小寨东路", "高新路"],
        region: "610113",
    },
    City {
        name: ("厦门", "廈門", "Xiamen"),
        province: "福建省",
        districts: &["思明区", "湖里区"],
        roads: &["鹭江道", "湖滨南路", "厦禾路"],
        region: "350203",
    },
    City {
        name: ("重庆", "重慶", "Chongqing"),
        province: "",
        districts: &["渝中区", "江北区", "渝北区"],
        roads: &["解放碑步行街", "观音桥步行街", "金开大道"],
        region: "500103",
    },
];

const BUILDINGS: &[&str] =
    &["华星大厦", "国际中心", "科技大厦", "金融广场", "创业园", "世纪广场", "时代大厦", "数码港"];
const ESTATES: &[&str] = &["阳光花园", "翠苑小区", "金色家园", "绿城公寓", "锦绣华庭", "世纪新城"];

/// Company brands: simplified, traditional, pinyin.
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
    ("锦程", "錦程", "Jincheng"),
    ("智联", "智聯", "Zhilian"),
    ("蓝海", "藍海", "Lanhai"),
    ("万方", "萬方", "Wanfang"),
    ("汇通", "匯通", "Huitong"),
    ("启明", "啟明", "Qiming"),
    ("联创", "聯創", "Lianchuang"),
    ("东升", "東升", "Dongsheng"),
    ("长风", "長風", "Changfeng"),
    ("银河", "銀河", "Yinhe"),
    ("凯旋", "凱旋", "Kaixuan"),
    ("九州", "九州", "Jiuzhou"),
    ("百川", "百川", "Baichuan"),
    ("未来", "未來", "Weilai"),
    ("龙腾", "龍騰", "Longteng"),
    ("华夏", "華夏", "Huaxia"),
    ("创新", "創新", "Chuangxin"),
    ("鸿运", "鴻運", "Hongyun"),
];

/// Industry words: simplified, traditional, English.
const INDUSTRIES: &[(&str, &str, &str)] = &[
    ("信息科技", "信息科技", "Information Technology"),
    ("软件", "軟件", "Software"),
    ("网络科技", "網絡科技", "Network Technology"),
    ("机械制造", "機械製造", "Machinery"),
    ("电子", "電子", "Electronics"),
    ("商贸", "商貿", "Trading"),
    ("电子商务", "電子商務", "E-Commerce"),
    ("投资管理", "投資管理", "Investment Management"),
    ("医疗器械", "醫療器械", "Medical Devices"),
    ("生物科技", "生物科技", "Biotech"),
    ("教育咨询", "教育諮詢", "Education Consulting"),
    ("物流", "物流", "Logistics"),
    ("新能源", "新能源", "New Energy"),
    ("文化传媒", "文化傳媒", "Media"),
    ("建筑工程", "建築工程", "Construction"),
    ("环保科技", "環保科技", "Environmental Technology"),
];

const ZH_SUFFIXES: &[(&str, &str)] = &[
    ("有限公司", "有限公司"),
    ("有限责任公司", "有限責任公司"),
    ("股份有限公司", "股份有限公司"),
    ("集团有限公司", "集團有限公司"),
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
    "Lakeside",
];
const EN_SUFFIXES: &[&str] = &["Co., Ltd.", "Ltd.", "Inc.", "LLC", "Limited", "Corp.", "Co. Ltd"];
const MOBILE_PREFIXES: &[&str] = &[
    "130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152", "153", "155", "156", "157",
    "158", "159", "176", "177", "178", "180", "181", "182", "183", "185", "186", "187", "188", "189", "198", "199",
];
const MAIL_DOMAINS: &[(&str, u32)] =
    &[("qq.com", 30), ("163.com", 20), ("126.com", 8), ("sina.com", 5), ("gmail.com", 8), ("outlook.com", 5), ("", 24)];

#[derive(Clone)]
struct Company {
    english: bool,
    /// Index into EN_WORDS (English companies).
    brand: usize,
    /// Chinese brand (字号): simplified, traditional.
    zh_brand: (String, String),
    industry: usize,
    suffix: usize,
    city: usize,
    city_prefix: bool,
    domain: String,
    address: String,
    landline: String,
    uscc: String,
}

#[derive(Clone)]
struct Person {
    english: bool,
    /// Chinese: surname index and given-name characters (group, member).
    surname: usize,
    given: Vec<(usize, usize)>,
    /// English: first-name index and last-name index.
    first: usize,
    last: usize,
    mobile: String,
    email: Option<String>,
    birth: Option<(i32, u32, u32)>,
    id_number: Option<String>,
    company: Option<usize>,
    city: usize,
    address: Option<String>,
}

/// Generates the people benchmark.
pub fn people(config: SynthConfig) -> SynthData {
    let mut rng = Rng(config.seed ^ 0x7065_6f70_6c65);
    let companies: Vec<Company> = (0..(config.records / 12).max(4)).map(|i| new_company(&mut rng, i)).collect();
    let mut used_emails = std::collections::HashSet::new();
    let mut rows: Vec<(u32, Vec<String>)> = Vec::with_capacity(config.records);
    let mut entity = 0u32;
    while rows.len() < config.records {
        let person = new_person(&mut rng, &companies, &mut used_emails, None);
        let copies = if rng.chance(config.duplicate_share) { 1 + [1, 1, 1, 2, 2, 3][rng.below(6)] } else { 1 };
        for copy in 0..copies {
            if rows.len() >= config.records {
                break;
            }
            rows.push((entity, person_record(&mut rng, &person, &companies, copy > 0)));
        }
        entity += 1;
        // A relative: same surname and address, often the same company; a different person.
        if !person.english && rng.chance(0.06) && rows.len() < config.records {
            let relative = new_person(&mut rng, &companies, &mut used_emails, Some(&person));
            rows.push((entity, person_record(&mut rng, &relative, &companies, false)));
            entity += 1;
        }
    }
    // Shuffle so that duplicates are not adjacent.
    for i in (1..rows.len()).rev() {
        let j = rng.below(i + 1);
        rows.swap(i, j);
    }
    let header = PEOPLE_COLUMNS.iter().map(|(c, _)| (*c).to_owned()).collect();
    let mut out_rows = Vec::with_capacity(rows.len());
    let mut entities = Vec::with_capacity(rows.len());
    for (i, (e, mut fields)) in rows.into_iter().enumerate() {
        fields.insert(0, format!("P{:06}", i + 1));
        out_rows.push(fields);
        entities.push(e);
    }
    SynthData { header, rows: out_rows, entity: entities }
}

/// Generates the companies benchmark.
pub fn companies(config: SynthConfig) -> SynthData {
    let mut rng = Rng(config.seed ^ 0x636f_6d70_616e);
    let mut rows: Vec<(u32, Vec<String>)> = Vec::with_capacity(config.records);
    let mut entity = 0u32;
    while rows.len() < config.records {
        let company = new_company(&mut rng, entity as usize);
        let copies = if rng.chance(config.duplicate_share) { 1 + [1, 1, 1, 2, 2, 3][rng.below(6)] } else { 1 };
        for copy in 0..copies {
            if rows.len() >= config.records {
                break;
            }
            rows.push((entity, company_record(&mut rng, &company, copy > 0)));
        }
        entity += 1;
    }
    for i in (1..rows.len()).rev() {
        let j = rng.below(i + 1);
        rows.swap(i, j);
    }
    let header = COMPANY_COLUMNS.iter().map(|(c, _)| (*c).to_owned()).collect();
    let mut out_rows = Vec::with_capacity(rows.len());
    let mut entities = Vec::with_capacity(rows.len());
    for (i, (e, mut fields)) in rows.into_iter().enumerate() {
        fields.insert(0, format!("C{:06}", i + 1));
        out_rows.push(fields);
        entities.push(e);
    }
    SynthData { header, rows: out_rows, entity: entities }
}

fn new_company(rng: &mut Rng, serial: usize) -> Company {
    let english = rng.chance(0.2);
    let brand = rng.below(EN_WORDS.len());
    // A brand of two characters taken from two different brands of the pool, so that brands
    // are as varied as in real registries.
    let (first, second) = (rng.below(BRANDS.len()), rng.below(BRANDS.len()));
    let pick_char = |s: &str, i: usize| s.chars().nth(i).map(String::from).unwrap_or_default();
    let zh_brand = (
        format!("{}{}", pick_char(BRANDS[first].0, 0), pick_char(BRANDS[second].0, 1)),
        format!("{}{}", pick_char(BRANDS[first].1, 0), pick_char(BRANDS[second].1, 1)),
    );
    let industry = rng.below(INDUSTRIES.len());
    let suffix = if english { rng.below(EN_SUFFIXES.len()) } else { rng.weighted(&[6, 2, 1, 1]) };
    let city = rng.below(CITIES.len());
    let c = &CITIES[city];
    let base = if english { EN_WORDS[brand].to_lowercase() } else { BRANDS[first].2.to_lowercase() };
    let domain =
        format!("{base}{}.com", if serial.is_multiple_of(3) { String::new() } else { format!("{}", serial % 97) });
    let address = format!(
        "{}{}市{}{}{}号{}",
        c.province,
        c.name.0,
        rng.pick(c.districts),
        rng.pick(c.roads),
        rng.range(1, 999),
        rng.pick(BUILDINGS)
    );
    let landline = format!("0{}{}", 10 + rng.below(89), rng.range(20_000_000, 89_999_999));
    let mut uscc17 = String::from("91");
    uscc17.push_str(c.region);
    for _ in 0..9 {
        uscc17.push(char::from(b'0' + rng.below(10) as u8));
    }
    let uscc = match crate::normalize::uscc_check_char(&uscc17) {
        Some(check) => format!("{uscc17}{check}"),
        None => format!("{uscc17}0"),
    };
    Company {
        english,
        brand,
        zh_brand,
        industry,
        suffix,
        city,
        city_prefix: rng.chance(0.5),
        domain,
        address,
        landline,
        uscc,
    }
}

fn new_person(
    rng: &mut Rng,
    companies: &[Company],
    used_emails: &mut std::collections::HashSet<String>,
    relative_of: Option<&Person>,
) -> Person {
    let english = relative_of.map_or_else(|| rng.chance(0.22), |r| r.english);
    let weights: Vec<u32> = SURNAMES.iter().map(|s| s.3).collect();
    let surname = relative_of.map_or_else(|| rng.weighted(&weights), |r| r.surname);
    let given_len = if rng.chance(0.3) { 1 } else { 2 };
    let given: Vec<(usize, usize)> = (0..given_len)
        .map(|_| {
            let group = rng.below(GIVEN_GROUPS.len());
            let members = GIVEN_GROUPS[group].1.len();
            // The first member of a group is used as often as all the others together.
            let member = if rng.chance(0.5) { 0 } else { rng.below(members) };
            (group, member)
        })
        .collect();
    let first = rng.below(EN_FIRST.len());
    let last = relative_of.map_or_else(|| rng.below(EN_LAST.len()), |r| r.last);
    let mobile = format!("{}{:08}", rng.pick(MOBILE_PREFIXES), rng.below(100_000_000));
    let birth = if rng.chance(0.45) {
        let year = match relative_of.and_then(|r| r.birth) {
            Some((y, _, _)) => y + [-28, -26, 0, 2, 3, 27, 30][rng.below(7)],
            None => rng.range(1958, 2003) as i32,
        };
        Some((year, rng.range(1, 12), rng.range(1, 28)))
    } else {
        None
    };
    let company = match relative_of {
        Some(r) if rng.chance(0.3) => r.company,
        _ => (!rng.chance(0.15)).then(|| rng.below(companies.len())),
    };
    let city = match (relative_of, company) {
        (Some(r), _) => r.city,
        (None, Some(c)) if rng.chance(0.8) => companies[c].city,
        _ => rng.below(CITIES.len()),
    };
    let address = match relative_of {
        Some(r) => r.address.clone(),
        None => rng.chance(0.55).then(|| {
            let c = &CITIES[city];
            format!(
                "{}{}市{}{}{}号{}{}栋{}室",
                c.province,
                c.name.0,
                rng.pick(c.districts),
                rng.pick(c.roads),
                rng.range(1, 500),
                rng.pick(ESTATES),
                rng.range(1, 30),
                rng.range(101, 2805)
            )
        }),
    };
    let mut person = Person {
        english,
        surname,
        given,
        first,
        last,
        mobile,
        email: None,
        birth,
        id_number: None,
        company,
        city,
        address,
    };
    if rng.chance(0.8) {
        let mut email = email_for(rng, &person, companies);
        while used_emails.contains(&email) {
            let (local, domain) = email.split_once('@').unwrap_or((&email, "qq.com"));
            email = format!("{local}{}@{domain}", rng.range(1, 99));
        }
        used_emails.insert(email.clone());
        person.email = Some(email);
    }
    if !english
        && let Some((y, m, d)) = birth
        && rng.chance(0.35)
    {
        let first17 = format!("{}{y:04}{m:02}{d:02}{:03}", CITIES[city].region, rng.below(1000));
        if let Some(check) = resident_id_check_char(&first17) {
            person.id_number = Some(format!("{first17}{check}"));
        }
    }
    person
}

fn email_for(rng: &mut Rng, p: &Person, companies: &[Company]) -> String {
    let (surname, given) = latin_parts(p);
    let (surname, given) = (surname.to_lowercase(), given.to_lowercase().replace(' ', ""));
    let year = p.birth.map_or(String::new(), |(y, _, _)| format!("{}", y % 100));
    let local = match rng.below(7) {
        0 => format!("{surname}{given}"),
        1 => format!("{given}.{surname}"),
        2 => format!("{surname}{given}{year}"),
        3 => format!("{}{}{}", &surname[..1], &given[..1.min(given.len())], rng.range(100, 9999)),
        4 if !p.english => format!("{}", rng.range(10_000_000, 2_999_999_999)),
        5 => format!("{given}{surname}"),
        _ => format!("{}{surname}", &given[..1.min(given.len())]),
    };
    let domain_index = rng.weighted(&MAIL_DOMAINS.iter().map(|d| d.1).collect::<Vec<_>>());
    let domain = match (MAIL_DOMAINS[domain_index].0, p.company) {
        ("", Some(c)) => companies[c].domain.clone(),
        ("", None) => "163.com".to_owned(),
        (d, _) => d.to_owned(),
    };
    let domain = if local.bytes().all(|b| b.is_ascii_digit()) { "qq.com".to_owned() } else { domain };
    format!("{local}@{domain}")
}

/// (surname, given name) in Latin letters: pinyin for Chinese people.
fn latin_parts(p: &Person) -> (String, String) {
    if p.english {
        let last = EN_LAST[p.last].replace('\'', "").replace('ü', "u").replace('í', "i");
        (last, EN_FIRST[p.first].0.to_owned())
    } else {
        let surname = SURNAMES[p.surname].2.to_owned();
        let given: String = p.given.iter().map(|&(g, _)| GIVEN_GROUPS[g].0).collect();
        (surname, capitalise(&given))
    }
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn person_record(rng: &mut Rng, p: &Person, companies: &[Company], duplicate: bool) -> Vec<String> {
    let name = if p.english { english_name(rng, p, duplicate) } else { chinese_name(rng, p, duplicate) };
    let mobile = if duplicate && rng.chance(0.12) {
        String::new()
    } else if duplicate && rng.chance(0.08) {
        // A new number.
        format!("{}{:08}", rng.pick(MOBILE_PREFIXES), rng.below(100_000_000))
    } else if duplicate && rng.chance(0.06) {
        let mistyped = typo_digits(rng, &p.mobile);
        format_mobile(rng, &mistyped)
    } else {
        format_mobile(rng, &p.mobile)
    };
    let email = match &p.email {
        Some(_) if duplicate && rng.chance(0.2) => String::new(),
        Some(e) if duplicate && rng.chance(0.05) => typo_email(rng, e),
        Some(e) if duplicate && rng.chance(0.1) => {
            let (local, domain) = e.split_once('@').unwrap_or((e, "qq.com"));
            let other =
                ["qq.com", "163.com", "gmail.com", "126.com"].iter().find(|d| **d != domain).unwrap_or(&"qq.com");
            format!("{local}@{other}")
        }
        Some(e) if rng.chance(0.1) => e.to_uppercase(),
        Some(e) if rng.chance(0.05) => format!(" {e} "),
        Some(e) => e.clone(),
        None => String::new(),
    };
    let birth = match p.birth {
        Some(_) if duplicate && rng.chance(0.25) => String::new(),
        Some((y, m, d)) => {
            let (y, m, d) = if duplicate && m != d && d <= 12 && rng.chance(0.06) {
                (y, d, m)
            } else if duplicate && rng.chance(0.05) {
                match rng.below(3) {
                    0 => (y + 1, m, d),
                    1 => (y, m, if d < 28 { d + 1 } else { d - 1 }),
                    _ => (y - 10, m, d),
                }
            } else {
                (y, m, d)
            };
            format_date(rng, y, m, d)
        }
        None => String::new(),
    };
    let id_number = match &p.id_number {
        Some(_) if duplicate && rng.chance(0.4) => String::new(),
        Some(id) if duplicate && rng.chance(0.05) => typo_digits(rng, id),
        Some(id) if rng.chance(0.2) => id.to_lowercase(),
        Some(id) if rng.chance(0.1) => format!("{} {} {}", &id[..6], &id[6..14], &id[14..]),
        Some(id) => id.clone(),
        None => String::new(),
    };
    let company = match p.company {
        Some(_) if duplicate && rng.chance(0.2) => String::new(),
        Some(_) if duplicate && rng.chance(0.07) => {
            // A new employer.
            let serial = rng.below(1000);
            let other = new_company(rng, serial);
            company_name(rng, &other, true)
        }
        Some(c) => company_name(rng, &companies[c], duplicate),
        None => String::new(),
    };
    let moved = duplicate && rng.chance(0.12);
    let city_index = if moved { rng.below(CITIES.len()) } else { p.city };
    let city = if rng.chance(0.3) { String::new() } else { city_name(rng, city_index) };
    let address = match &p.address {
        _ if moved && rng.chance(0.5) => {
            let c = &CITIES[city_index];
            format!("{}{}{}号{}", c.name.0, rng.pick(c.roads), rng.range(1, 500), rng.pick(ESTATES))
        }
        Some(_) if duplicate && rng.chance(0.3) => String::new(),
        Some(a) => address_variant(rng, a),
        None => String::new(),
    };
    vec![name, mobile, email, birth, id_number, company, city, address]
}

fn chinese_name(rng: &mut Rng, p: &Person, duplicate: bool) -> String {
    let (s_simplified, s_traditional, s_pinyin, _) = SURNAMES[p.surname];
    let mut given = p.given.clone();
    let variant =
        if duplicate { rng.weighted(&[52, 9, 12, 9, 5, 5, 4, 4]) } else { rng.weighted(&[90, 2, 6, 0, 0, 0, 2, 0]) };
    match variant {
        3 => {
            // Homophone: another character of the same sound (what a pinyin IME offers).
            let i = rng.below(given.len());
            let (group, member) = given[i];
            let members = GIVEN_GROUPS[group].1.len();
            if members > 1 {
                given[i] = (group, (member + 1 + rng.below(members - 1)) % members);
            }
        }
        4 => {
            // Wrong character from another sound.
            let i = rng.below(given.len());
            let group = rng.below(GIVEN_GROUPS.len());
            given[i] = (group, 0);
        }
        5 if given.len() == 2 => {
            given.remove(rng.below(2));
        }
        _ => {}
    }
    let traditional = variant == 1;
    let han = |given: &[(usize, usize)]| {
        let mut out = String::from(if traditional { s_traditional } else { s_simplified });
        for &(g, m) in given {
            let (s, t) = GIVEN_GROUPS[g].1[m];
            out.push_str(if traditional { t } else { s });
        }
        out
    };
    let given_pinyin: Vec<&str> = given.iter().map(|&(g, _)| GIVEN_GROUPS[g].0).collect();
    match variant {
        2 => {
            let joined = capitalise(&given_pinyin.concat());
            match rng.below(6) {
                0 => format!("{s_pinyin} {joined}"),
                1 => format!("{} {joined}", s_pinyin.to_uppercase()),
                2 => format!("{joined} {s_pinyin}"),
                3 => format!("{s_pinyin}{}", given_pinyin.concat()),
                4 => {
                    format!("{} {}", s_pinyin, given_pinyin.iter().map(|g| capitalise(g)).collect::<Vec<_>>().join(" "))
                }
                _ => format!("{}, {joined}", s_pinyin),
            }
        }
        6 => {
            let name = han(&given);
            let chars: Vec<char> = name.chars().collect();
            if rng.chance(0.5) {
                chars.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" ")
            } else {
                format!(" {name}　")
            }
        }
        7 => {
            // An English name used at work, with the pinyin surname.
            format!("{} {s_pinyin}", EN_FIRST[p.first].0)
        }
        _ => han(&given),
    }
}

fn english_name(rng: &mut Rng, p: &Person, duplicate: bool) -> String {
    let (first, nicknames) = EN_FIRST[p.first];
    let last = EN_LAST[p.last];
    let variant =
        if duplicate { rng.weighted(&[50, 10, 10, 12, 8, 6, 4]) } else { rng.weighted(&[92, 3, 3, 0, 0, 0, 2]) };
    match variant {
        1 => format!("{last} {first}"),
        2 => format!("{last}, {first}"),
        3 => {
            if rng.chance(0.5) {
                format!("{} {last}", typo_word(rng, first))
            } else {
                format!("{first} {}", typo_word(rng, last))
            }
        }
        4 if !nicknames.is_empty() => format!("{} {last}", rng.pick(nicknames)),
        5 => format!("{}. {last}", &first[..1]),
        6 => format!("{} {}", first.to_uppercase(), last.to_uppercase()),
        _ => format!("{first} {last}"),
    }
}

fn typo_word(rng: &mut Rng, word: &str) -> String {
    let mut chars: Vec<char> = word.chars().collect();
    if chars.len() < 3 {
        return word.to_owned();
    }
    let i = 1 + rng.below(chars.len() - 2);
    match rng.below(4) {
        0 => {
            chars.swap(i, i + 1);
        }
        1 => {
            chars.remove(i);
        }
        2 => chars.insert(i, chars[i]),
        _ => chars[i] = char::from(b'a' + rng.below(26) as u8),
    }
    chars.into_iter().collect()
}

fn typo_digits(rng: &mut Rng, digits: &str) -> String {
    let mut chars: Vec<char> = digits.chars().collect();
    if chars.len() < 4 {
        return digits.to_owned();
    }
    let i = 3 + rng.below(chars.len() - 4);
    if rng.chance(0.5) {
        chars.swap(i, i + 1);
    } else {
        let old = chars[i].to_digit(10).unwrap_or(0);
        chars[i] = char::from(b'0' + ((old + 1 + rng.below(9) as u32) % 10) as u8);
    }
    chars.into_iter().collect()
}

fn typo_email(rng: &mut Rng, email: &str) -> String {
    let (local, domain) = email.split_once('@').unwrap_or((email, "qq.com"));
    if rng.chance(0.5) {
        let domain = domain.replace(".com", [".con", ".cm", ".comm"][rng.below(3)]);
        format!("{local}@{domain}")
    } else {
        format!("{}@{domain}", typo_word(rng, local))
    }
}

fn format_mobile(rng: &mut Rng, digits: &str) -> String {
    if digits.len() != 11 {
        return digits.to_owned();
    }
    let (a, b, c) = (&digits[..3], &digits[3..7], &digits[7..]);
    match rng.weighted(&[40, 15, 10, 10, 8, 6, 5, 3, 3]) {
        0 => digits.to_owned(),
        1 => format!("{a} {b} {c}"),
        2 => format!("{a}-{b}-{c}"),
        3 => format!("+86 {a} {b} {c}"),
        4 => format!("+86{digits}"),
        5 => format!("0086 {digits}"),
        6 => format!("86-{digits}"),
        7 => digits.chars().map(|c| char::from_u32(c as u32 - '0' as u32 + '０' as u32).unwrap_or(c)).collect(),
        _ => format!("(+86) {a}-{b}-{c}"),
    }
}

fn format_date(rng: &mut Rng, y: i32, m: u32, d: u32) -> String {
    match rng.weighted(&[40, 15, 15, 12, 8, 10]) {
        0 => format!("{y:04}-{m:02}-{d:02}"),
        1 => format!("{y}/{m}/{d}"),
        2 => format!("{y:04}{m:02}{d:02}"),
        3 => format!("{y}年{m}月{d}日"),
        4 => format!("{y}.{m:02}.{d:02}"),
        _ => format!("{y}-{m}-{d}"),
    }
}

fn company_name<'a>(rng: &mut Rng, c: &'a Company, duplicate: bool) -> String {
    if c.english {
        let word = EN_WORDS[c.brand];
        let industry = INDUSTRIES[c.industry].2;
        let suffix = if duplicate && rng.chance(0.5) { *rng.pick(EN_SUFFIXES) } else { EN_SUFFIXES[c.suffix] };
        return match rng.below(if duplicate { 4 } else { 1 }) {
            1 => format!("{} {}", word.to_uppercase(), industry.to_uppercase()),
            2 => format!("{word} {industry}"),
            _ => format!("{word} {industry} {suffix}"),
        };
    }
    let traditional = rng.chance(if duplicate { 0.08 } else { 0.02 });
    let (bs, bt) = (c.zh_brand.0.as_str(), c.zh_brand.1.as_str());
    let (is, it, _) = INDUSTRIES[c.industry];
    let (cs, ct, _) = CITIES[c.city].name;
    let suffix_index = if duplicate && rng.chance(0.35) { rng.below(ZH_SUFFIXES.len()) } else { c.suffix };
    let (ss, st) = ZH_SUFFIXES[suffix_index];
    let pick = |s: &'a str, t: &'a str| if traditional { t } else { s };
    let city_prefix = if duplicate && rng.chance(0.2) { !c.city_prefix } else { c.city_prefix };
    let brand = pick(bs, bt);
    let industry = pick(is, it);
    let suffix = if duplicate && rng.chance(0.1) { "" } else { pick(ss, st) };
    let city = pick(cs, ct);
    if city_prefix {
        format!("{city}{brand}{industry}{suffix}")
    } else if duplicate && rng.chance(0.2) {
        let (open, close) = if rng.chance(0.5) { ("（", "）") } else { ("(", ")") };
        format!("{brand}{industry}{open}{city}{close}{suffix}")
    } else {
        format!("{brand}{industry}{suffix}")
    }
}

fn city_name(rng: &mut Rng, city: usize) -> String {
    let c = &CITIES[city];
    match rng.weighted(&[40, 30, 10, 10, 5, 5]) {
        0 => c.name.0.to_owned(),
        1 => format!("{}市", c.name.0),
        2 => c.name.2.to_owned(),
        3 if !c.province.is_empty() => format!("{}{}市", c.province, c.name.0),
        4 => format!("{}市", c.name.1),
        5 if !c.province.is_empty() => format!("{}{}", c.province.trim_end_matches('省'), c.name.0),
        _ => c.name.0.to_owned(),
    }
}

fn address_variant(rng: &mut Rng, address: &str) -> String {
    match rng.weighted(&[60, 12, 10, 10, 8]) {
        1 => {
            // Without the province.
            match address.find('省') {
                Some(i) => address[i + '省'.len_utf8()..].to_owned(),
                None => address.to_owned(),
            }
        }
        2 => address.replace('号', "号 ").replace('区', "区 "),
        3 => address
            .chars()
            .map(|c| if c.is_ascii_digit() { char::from_u32(c as u32 + 0xFEE0).unwrap_or(c) } else { c })
            .collect(),
        4 => address.replace("栋", "幢").replace('室', ""),
        _ => address.to_owned(),
    }
}

fn company_record(rng: &mut Rng, c: &Company, duplicate: bool) -> Vec<String> {
    let name = company_name(rng, c, duplicate);
    let uscc = if duplicate && rng.chance(0.3) {
        String::new()
    } else if duplicate && rng.chance(0.05) {
        typo_digits(rng, &c.uscc)
    } else if rng.chance(0.1) {
        c.uscc.to_lowercase()
    } else {
        c.uscc.clone()
    };
    let phone = if duplicate && rng.chance(0.2) {
        String::new()
    } else if rng.chance(0.3) {
        format!("{}-{}", &c.landline[..3], &c.landline[3..])
    } else {
        c.landline.clone()
    };
    let website = if rng.chance(0.4) { String::new() } else { format!("www.{}", c.domain) };
    let city = if rng.chance(0.3) { String::new() } else { city_name(rng, c.city) };
    let address = if duplicate && rng.chance(0.25) {
        String::new()
    } else if duplicate && rng.chance(0.1) {
        let city = &CITIES[c.city];
        format!("{}{}{}号{}", city.name.0, rng.pick(city.roads), rng.range(1, 999), rng.pick(BUILDINGS))
    } else {
        address_variant(rng, &c.address)
    };
    vec![name, uscc, phone, website, city, address]
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_sized() {
        let config = SynthConfig { records: 500, seed: 3, duplicate_share: 0.4 };
        let a = people(config);
        let b = people(config);
        assert_eq!(a, b);
        assert_eq!(a.rows.len(), 500);
        assert_eq!(a.entity.len(), 500);
        assert!(a.rows.iter().all(|r| r.len() == PEOPLE_COLUMNS.len()));
        let entities: std::collections::HashSet<u32> = a.entity.iter().copied().collect();
        assert!(entities.len() < 450 && entities.len() > 250, "{}", entities.len());
        let c = companies(config);
        assert_eq!(c.rows.len(), 500);
        assert!(c.rows.iter().all(|r| r.len() == COMPANY_COLUMNS.len()));
    }

    #[test]
    fn generated_identifiers_are_valid() {
        let data = people(SynthConfig { records: 300, seed: 1, duplicate_share: 0.0 });
        let today = time::Date::MAX;
        for row in &data.rows {
            if !row[5].is_empty() {
                assert!(crate::normalize::normalize_cn_resident_id(&row[5], today).is_ok(), "{}", row[5]);
            }
            if !row[2].is_empty() {
                assert!(crate::normalize::normalize_phone(&row[2], "CN").is_ok(), "{}", row[2]);
            }
        }
    }
}
