DROP TABLE attempts;
DROP TABLE exam_sessions;
DROP TABLE items;
DROP TABLE item_banks;
